/**
 * The verifier service and its clients.
 *
 * {@link VerifierService} is a worker (default address `verifier`) reached **only through secure
 * channels** of its node. Requests and replies are msgpack maps:
 *
 * | op | who | request | reply |
 * |---|---|---|---|
 * | `appraise` | any peer (background check) | `{ evidence, handle, attesterStaticPub, identifier? }` | `{ ok, token }`: a signed result whose nonce is `handle` |
 * | `passport` | a peer whose channel attested it to this service | `{}` | `{ ok, token }`: a signed result about that peer's static key |
 * | `keys` | any peer | `{}` | `{ ok, keys: [{ kid, spki }] }` |
 * | `setReferenceValues` | admins | `{ name, pcrs: {index: hex}, expires? }` | `{ ok }` |
 * | `removeReferenceValues` | admins | `{ name }` | `{ ok, removed }` |
 * | `listReferenceValues` | admins | `{}` | `{ ok, sets }` |
 * | `setPolicy` | admins | `{ policy }` (checked: {@link checkPolicy}) | `{ ok }` |
 * | `getPolicy` | admins | `{}` | `{ ok, policy }` |
 * | `enrolStart` | any peer (when enrolment is on) | `{ ekPublic, akPublic }` (TPM2B_PUBLIC bytes) | `{ ok, credentialBlob, encryptedSecret }` |
 * | `enrolFinish` | the peer of the same channel | `{ secret }` | `{ ok, ak }`: the enrolled AK's key id |
 * | `allowEk` | admins | `{ ekPublic }` (TPM2B_PUBLIC or 65-byte point) | `{ ok, added }` |
 * | `listEks` | admins | `{}` | `{ ok, eks }`: hex points |
 *
 * Failures reply `{ ok: false, code, message, reason? }` with a stable code (ERR_BAD_REQUEST,
 * ERR_VERIFIER_DENIED, ERR_ATTEST_EVIDENCE, ERR_ATTEST_ENROL_FAILED with a reason, ...).
 *
 * **AK enrolment** (`enrolTpm: true`) is credential activation (attest/enrol.ts) split over two
 * requests: `enrolStart` checks the AK public area and the EK against the EK policy — the admin
 * allow-list (`allowEk`), or any EK with `tofuEk: true` — and answers a credential for the AK's
 * Name protected by a fresh random 32-byte secret; the secret stays pending for that secure
 * channel only (60 s, one per channel, at most {@link MAX_PENDING_ENROLMENTS} in all).
 * `enrolFinish` on the same channel returns the secret the TPM released; a match (constant time)
 * adds the AK to the verifier's trust anchors (and calls `onAkEnrolled`). Every peer may ask:
 * possession is proven by the TPM (only the TPM holding that EK, with that exact AK loaded,
 * releases the secret), not by the channel's identity. What is *not* proven: that the EK belongs
 * to genuine TPM silicon (no EK certificate chain is checked) — hence the allow-list, and why
 * `tofuEk` is for labs and first provisioning only. A wrong answer drops the pending secret.
 *
 * {@link RemoteVerifier} is the relying party's side of a background check: an
 * EvidenceAppraiser that asks a verifier service by route and checks the signed answer.
 * {@link PassportClient} is a prover's side of the passport model.
 *
 * @module
 */
import type { KeyObject } from 'node:crypto'
import { createPublicKey, timingSafeEqual } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import { checkEvidence } from '../attest/evidence.ts'
import { ekPointOf, secretMatches, startEnrolment } from '../attest/enrol.ts'
import { spkiKeyId } from '../attest/keys.ts'
import { readResultToken, signResult, verifyResultToken, type ResultSigner } from '../attest/token.ts'
import type { AttestationResult } from '../attest/types.ts'
import type { AppraisalPolicy, Verifier } from '../attest/verifier.ts'
import type { AppraisalRequest, EvidenceAppraiser, PassportSource } from '../channel/attestation.ts'
import type { SecureChannel, SecureListener } from '../channel/secure-channel.ts'
import { DEFAULT_MAX_CLOCK_SKEW_MS, DEFAULT_RENEWAL_THRESHOLD } from '../attest/constants.ts'
import { withDeadline } from '../deadline.ts'
import { type ErrorCode, isThroughlineError, tlError } from '../errors.ts'
import type { Message } from '../router/message.ts'
import type { Node, WorkerContext } from '../router/node.ts'
import type { Route } from '../router/route.ts'

/** Default address of the verifier service. */
export const VERIFIER_ADDRESS = 'verifier'
/** How long a relying party waits for a verifier service (ms) unless configured. */
export const DEFAULT_VERIFIER_TIMEOUT_MS = 5_000
/** Largest request the service decodes (bytes). */
const MAX_REQUEST = 128 * 1024
/** How long an `enrolStart` secret waits for its `enrolFinish` (ms). */
export const ENROL_PENDING_MS = 60_000
/** Most pending enrolments the service keeps (one per channel). */
export const MAX_PENDING_ENROLMENTS = 1024

/** An AK the service enrolled (what `onAkEnrolled` gets to persist). */
export interface EnrolledAkRecord {
  /** SPKI DER of the AK: a `trustAnchors.tpmAks` entry. */
  akSpki: Uint8Array
  /** Its key id (`spkiKeyId`). */
  kid: string
  /** The 65-byte EK point it was bound to. */
  ekPoint: Uint8Array
  /** The identifier of the peer that enrolled it. */
  peer: string
}

interface PendingEnrolment {
  secret: Uint8Array
  akSpki: Uint8Array
  ekPoint: Uint8Array
  expires: number
}

export interface VerifierServiceOptions {
  /** The appraiser (trust anchors, reference values, policy). */
  verifier: Verifier
  /** Signs results (Ed25519). */
  signer: ResultSigner
  /** Identifiers allowed to change reference values and policies. */
  admins?: Iterable<string>
  /** The secure listener whose channels reach this service (needed for `passport`). */
  listener?: SecureListener
  name?: string
  /** Called after an admin changed the reference values (e.g. to persist them); errors are logged. */
  onReferenceValuesChanged?: (sets: ReturnType<Verifier['referenceValues']['list']>) => void | Promise<void>
  /** Called after an admin changed the appraisal policy; errors are logged. */
  onPolicyChanged?: (policy: AppraisalPolicy) => void | Promise<void>
  /** Accept AK enrolment (`enrolStart`/`enrolFinish`). Default false. */
  enrolTpm?: boolean
  /** Accept any EK at enrolment (trust on first use), not only the allowed ones. Default false. */
  tofuEk?: boolean
  /** EKs allowed at enrolment (TPM2B_PUBLIC bytes or 65-byte P-256 points); admins add more with `allowEk`. */
  allowedEks?: Iterable<Uint8Array>
  /** Called after an AK was enrolled (e.g. to persist it); errors are logged. */
  onAkEnrolled?: (akSpki: Uint8Array, record: EnrolledAkRecord) => void | Promise<void>
  /** Called after an admin allowed an EK, with every allowed EK point; errors are logged. */
  onEksChanged?: (ekPoints: Uint8Array[]) => void | Promise<void>
}

/** Checks an appraisal policy sent to the service (or read from a file); ERR_BAD_REQUEST names the bad field. */
export function checkPolicy(x: unknown): AppraisalPolicy {
  const p = x as Record<string, unknown> | null
  if (p === null || typeof p !== 'object' || Array.isArray(p)) throw tlError('ERR_BAD_REQUEST', 'a policy is a map {id, minSvn?, debug?, requireReferenceValues?, trustSim?, maxClockSkewMs?}')
  const known = new Set(['id', 'minSvn', 'debug', 'requireReferenceValues', 'trustSim', 'maxClockSkewMs'])
  for (const k of Object.keys(p)) if (!known.has(k)) throw tlError('ERR_BAD_REQUEST', `policy: unknown field "${k.slice(0, 32)}"`)
  if (typeof p['id'] !== 'string' || p['id'].length === 0 || p['id'].length > 64) throw tlError('ERR_BAD_REQUEST', 'policy: id must be 1..64 characters')
  const out: AppraisalPolicy = { id: p['id'] }
  const int = (k: string): number | undefined => {
    const v = p[k]
    if (v === undefined || v === null) return undefined
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw tlError('ERR_BAD_REQUEST', `policy: ${k} must be a whole number >= 0`)
    return v as number
  }
  const bool = (k: string): boolean | undefined => {
    const v = p[k]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'boolean') throw tlError('ERR_BAD_REQUEST', `policy: ${k} must be true or false`)
    return v
  }
  const minSvn = int('minSvn')
  if (minSvn !== undefined) out.minSvn = minSvn
  const skew = int('maxClockSkewMs')
  if (skew !== undefined) out.maxClockSkewMs = skew
  const rv = bool('requireReferenceValues')
  if (rv !== undefined) out.requireReferenceValues = rv
  const sim = bool('trustSim')
  if (sim !== undefined) out.trustSim = sim
  if (p['debug'] !== undefined && p['debug'] !== null) {
    if (p['debug'] !== 'warning' && p['debug'] !== 'contraindicated') throw tlError('ERR_BAD_REQUEST', 'policy: debug must be warning or contraindicated')
    out.debug = p['debug']
  }
  return out
}

/** The verifier service worker. */
export class VerifierService {
  readonly node: Node
  readonly verifier: Verifier
  readonly signer: ResultSigner
  readonly admins: Set<string>
  readonly #onChanged: VerifierServiceOptions['onReferenceValuesChanged']
  readonly #onPolicy: VerifierServiceOptions['onPolicyChanged']
  readonly #channels = new Map<string, SecureChannel>()
  readonly #enrolTpm: boolean
  readonly #tofuEk: boolean
  /** Allowed EK points, by hex. */
  readonly #eks = new Map<string, Uint8Array>()
  readonly #pending = new Map<string, PendingEnrolment>()
  readonly #onAkEnrolled: VerifierServiceOptions['onAkEnrolled']
  readonly #onEksChanged: VerifierServiceOptions['onEksChanged']
  /** Counters (diagnostics). */
  readonly stats = { appraisals: 0, passports: 0, refused: 0, enrolled: 0 }

  constructor(node: Node, options: VerifierServiceOptions) {
    this.node = node
    this.verifier = options.verifier
    this.signer = options.signer
    this.admins = new Set(options.admins ?? [])
    this.#onChanged = options.onReferenceValuesChanged
    this.#onPolicy = options.onPolicyChanged
    this.#enrolTpm = options.enrolTpm === true
    this.#tofuEk = options.tofuEk === true
    this.#onAkEnrolled = options.onAkEnrolled
    this.#onEksChanged = options.onEksChanged
    for (const ek of options.allowedEks ?? []) {
      const point = Uint8Array.from(ekPointOf(ek))
      this.#eks.set(hexOf(point), point)
    }
    options.listener?.on('channel', (ch: SecureChannel) => {
      this.#channels.set(ch.address.text, ch)
      ch.once('close', () => this.#channels.delete(ch.address.text))
    })
    node.startWorker(options.name ?? VERIFIER_ADDRESS, { handleMessage: (ctx, msg) => this.#handle(ctx, msg) }, { layer: 'service' })
  }

  async #handle(ctx: WorkerContext, msg: Message): Promise<void> {
    if (msg.return.length === 0) return
    try {
      ctx.reply(msg, pack(await this.#serve(msg)))
    } catch (err) {
      this.stats.refused++
      const code: ErrorCode = isThroughlineError(err) ? err.code : 'ERR_BAD_REQUEST'
      const message = err instanceof Error ? err.message.replace(/^ERR_[A-Z_]+: /, '') : String(err)
      const reason = isThroughlineError(err) ? err.details?.['reason'] : undefined
      ctx.reply(msg, pack({ ok: false, code, message, ...(typeof reason === 'string' ? { reason } : {}) }))
    }
  }

  async #changed(): Promise<void> {
    try {
      await this.#onChanged?.(this.verifier.referenceValues.list())
    } catch (err) {
      this.node.logger.error('verifier: saving the reference values failed', { error: err })
    }
  }

  /** Pending enrolments, expired ones dropped. */
  #sweep(now: number): void {
    for (const [k, p] of this.#pending) if (p.expires <= now) this.#pending.delete(k)
  }

  #enrolStart(channel: string, req: Record<string, unknown>): Record<string, unknown> {
    if (!this.#enrolTpm) throw tlError('ERR_VERIFIER_DENIED', 'this verifier does not enrol attestation keys (start it with enrolment on)')
    const ek = req['ekPublic']
    const akPub = req['akPublic']
    if (!(ek instanceof Uint8Array) || !(akPub instanceof Uint8Array)) throw tlError('ERR_BAD_REQUEST', 'enrolStart needs ekPublic and akPublic (TPM2B_PUBLIC bytes)')
    const point = ekPointOf(ek)
    if (!this.#tofuEk && !this.#eks.has(hexOf(point))) {
      throw tlError('ERR_ATTEST_ENROL_FAILED', `the EK ${hexOf(point).slice(0, 16)}… is not allowed by this verifier (an admin allows it with allowEk)`, { details: { reason: 'ek_not_allowed' } })
    }
    const challenge = startEnrolment(ek, akPub)
    const now = this.node.now()
    this.#pending.delete(channel) // at most one per channel: a new start replaces the previous one
    if (this.#pending.size >= MAX_PENDING_ENROLMENTS) this.#sweep(now)
    if (this.#pending.size >= MAX_PENDING_ENROLMENTS) {
      throw tlError('ERR_ATTEST_ENROL_FAILED', 'too many enrolments in progress; try again later', { details: { reason: 'busy' } })
    }
    this.#pending.set(channel, { secret: challenge.secret, akSpki: challenge.akSpki, ekPoint: challenge.ekPoint, expires: now + ENROL_PENDING_MS })
    return { ok: true, credentialBlob: challenge.credential.credentialBlob, encryptedSecret: challenge.credential.encryptedSecret }
  }

  async #enrolFinish(channel: string, peer: string, req: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (!this.#enrolTpm) throw tlError('ERR_VERIFIER_DENIED', 'this verifier does not enrol attestation keys (start it with enrolment on)')
    const pending = this.#pending.get(channel)
    this.#pending.delete(channel) // one answer per credential
    if (pending === undefined) throw tlError('ERR_ATTEST_ENROL_FAILED', 'no enrolment in progress on this channel (enrolStart first, on the same channel)', { details: { reason: 'no_pending' } })
    if (pending.expires <= this.node.now()) throw tlError('ERR_ATTEST_ENROL_FAILED', `the enrolment expired (enrolFinish within ${ENROL_PENDING_MS / 1000} s of enrolStart)`, { details: { reason: 'expired' } })
    if (!secretMatches(req['secret'], pending.secret)) throw tlError('ERR_ATTEST_ENROL_FAILED', 'the activated secret does not match the credential', { details: { reason: 'secret_mismatch' } })
    this.verifier.enrolAk(pending.akSpki)
    this.stats.enrolled++
    const kid = spkiKeyId(pending.akSpki)
    try {
      await this.#onAkEnrolled?.(Uint8Array.from(pending.akSpki), { akSpki: Uint8Array.from(pending.akSpki), kid, ekPoint: pending.ekPoint, peer })
    } catch (err) {
      this.node.logger.error('verifier: saving the enrolled AK failed', { error: err })
    }
    this.node.logger.info('verifier: AK enrolled', { ak: kid, peer })
    return { ok: true, ak: kid }
  }

  async #serve(msg: Message): Promise<Record<string, unknown>> {
    const peer = msg.local.peer
    if (msg.local.channel === undefined || peer === undefined) throw tlError('ERR_VERIFIER_DENIED', 'the verifier service answers only through secure channels')
    if (msg.payload.length > MAX_REQUEST) throw tlError('ERR_BAD_REQUEST', `request over ${MAX_REQUEST} bytes`)
    let req: Record<string, unknown>
    try {
      req = unpack(msg.payload) as Record<string, unknown>
    } catch {
      throw tlError('ERR_BAD_REQUEST', 'verifier request is not msgpack')
    }
    if (req === null || typeof req !== 'object' || typeof req['op'] !== 'string') throw tlError('ERR_BAD_REQUEST', 'verifier request must be a map with an op')
    const admin = (): void => {
      if (!this.admins.has(peer.identifier)) throw tlError('ERR_VERIFIER_DENIED', `${peer.identifier} is not an admin of this verifier`)
    }
    switch (req['op']) {
      case 'appraise': {
        const handle = req['handle']
        const pub = req['attesterStaticPub']
        if (!(handle instanceof Uint8Array) || handle.length !== 32 || !(pub instanceof Uint8Array) || pub.length !== 32) {
          throw tlError('ERR_BAD_REQUEST', 'appraise needs handle (32 bytes) and attesterStaticPub (32 bytes)')
        }
        const request: AppraisalRequest = { evidence: checkEvidence(req['evidence']), expectedHandle: handle, attesterStaticPub: pub }
        if (typeof req['identifier'] === 'string') request.identifier = req['identifier']
        const result = await this.verifier.appraise(request)
        this.stats.appraisals++
        return { ok: true, token: signResult(result, this.signer) }
      }
      case 'passport': {
        const ch = this.#channels.get(msg.local.channel.text)
        const result = ch?.attestation
        if (ch === undefined || result === undefined) {
          throw tlError('ERR_VERIFIER_DENIED', 'a passport is issued only over a channel whose peer attested itself to this verifier in the handshake')
        }
        const now = this.node.now()
        const fresh: AttestationResult = { ...result, iat: now, exp: now + this.verifier.resultTtlMs, nonce: new Uint8Array(0) }
        this.stats.passports++
        return { ok: true, token: signResult(fresh, this.signer) }
      }
      case 'keys':
        return { ok: true, keys: [{ kid: this.signer.kid, spki: new Uint8Array(createPublicKey(this.signer.privateKey).export({ type: 'spki', format: 'der' })) }] }
      case 'setReferenceValues': {
        admin()
        const pcrs = req['pcrs'] as Record<string, string> | undefined
        if (typeof req['name'] !== 'string' || pcrs === null || typeof pcrs !== 'object') throw tlError('ERR_BAD_REQUEST', 'setReferenceValues needs name and pcrs {index: hex}')
        const set: { name: string; pcrs: Record<number, string>; expires?: number } = { name: req['name'], pcrs: {} }
        for (const [k, v] of Object.entries(pcrs)) {
          const i = Number(k)
          if (!Number.isInteger(i) || i < 0 || i > 23 || typeof v !== 'string' || !/^[0-9a-f]{64}$/i.test(v)) throw tlError('ERR_BAD_REQUEST', `PCR ${k}: not an index 0..23 with 64 hex digits`)
          set.pcrs[i] = v.toLowerCase()
        }
        if (typeof req['expires'] === 'number') set.expires = req['expires']
        this.verifier.referenceValues.add(set)
        await this.#changed()
        return { ok: true }
      }
      case 'removeReferenceValues':
        admin()
        if (typeof req['name'] !== 'string') throw tlError('ERR_BAD_REQUEST', 'removeReferenceValues needs name')
        const removed = this.verifier.referenceValues.remove(req['name'])
        if (removed) await this.#changed()
        return { ok: true, removed }
      case 'listReferenceValues':
        admin()
        return { ok: true, sets: this.verifier.referenceValues.list() }
      case 'setPolicy': {
        admin()
        const policy = checkPolicy(req['policy'])
        this.verifier.setPolicy(policy)
        try {
          await this.#onPolicy?.(policy)
        } catch (err) {
          this.node.logger.error('verifier: saving the policy failed', { error: err })
        }
        return { ok: true }
      }
      case 'getPolicy':
        admin()
        return { ok: true, policy: { ...this.verifier.policy } }
      case 'enrolStart':
        return this.#enrolStart(msg.local.channel.text, req)
      case 'enrolFinish':
        return this.#enrolFinish(msg.local.channel.text, peer.identifier, req)
      case 'allowEk': {
        admin()
        if (!(req['ekPublic'] instanceof Uint8Array)) throw tlError('ERR_BAD_REQUEST', 'allowEk needs ekPublic (TPM2B_PUBLIC bytes or a 65-byte P-256 point)')
        let point: Uint8Array
        try {
          point = Uint8Array.from(ekPointOf(req['ekPublic']))
        } catch (err) {
          throw tlError('ERR_BAD_REQUEST', `allowEk: ${err instanceof Error ? err.message.replace(/^ERR_[A-Z_]+: /, '') : String(err)}`, { cause: err })
        }
        const key = hexOf(point)
        const added = !this.#eks.has(key)
        if (added) {
          this.#eks.set(key, point)
          try {
            await this.#onEksChanged?.([...this.#eks.values()])
          } catch (err) {
            this.node.logger.error('verifier: saving the allowed EKs failed', { error: err })
          }
        }
        return { ok: true, added }
      }
      case 'listEks':
        admin()
        return { ok: true, eks: [...this.#eks.keys()] }
      default:
        throw tlError('ERR_BAD_REQUEST', `unknown verifier op ${String(req['op']).slice(0, 32)}`)
    }
  }
}

/** Hex of bytes. */
function hexOf(b: Uint8Array): string {
  return Buffer.from(b).toString('hex')
}

/** Sends one request to a verifier service; ERR_VERIFIER_UNAVAILABLE when it does not answer. */
export async function verifierRequest(node: Node, route: Route, request: Record<string, unknown>, timeout = DEFAULT_VERIFIER_TIMEOUT_MS, signal?: AbortSignal): Promise<Record<string, unknown>> {
  let reply: Message
  try {
    const opts: { timeout: number; signal?: AbortSignal } = { timeout }
    if (signal !== undefined) opts.signal = signal
    reply = await node.request(route, pack(request), opts)
  } catch (err) {
    if (isThroughlineError(err, 'ERR_ABORTED')) throw err
    throw tlError('ERR_VERIFIER_UNAVAILABLE', `the verifier service did not answer within ${timeout} ms (${err instanceof Error ? err.message : String(err)})`, { cause: err })
  }
  let r: Record<string, unknown>
  try {
    r = unpack(reply.payload) as Record<string, unknown>
  } catch {
    throw tlError('ERR_VERIFIER_UNAVAILABLE', 'the verifier service answered with something that is not msgpack')
  }
  if (r?.['ok'] !== true) {
    const remote = r?.['code']
    const code = remote === 'ERR_VERIFIER_DENIED' || remote === 'ERR_ATTEST_ENROL_FAILED' ? remote : 'ERR_ATTEST_VERIFIER_FAILED'
    // an enrolment refusal keeps the service's reason (ek_not_allowed, secret_mismatch, ...)
    const reason = code === 'ERR_ATTEST_ENROL_FAILED' && typeof r?.['reason'] === 'string' ? r['reason'] : 'verifier_refused'
    // the remote code is named in the text only when it is not the error's own code
    const named = remote === code ? '' : `${String(remote ?? '')} `
    throw tlError(code, `the verifier service refused: ${named}${String(r?.['message'] ?? '')}`.trim(), { details: { reason, remoteCode: remote } })
  }
  return r
}

export interface RemoteVerifierOptions {
  /** Route to the verifier worker, inside a secure channel (e.g. `[0#<channel>, 0#verifier]`), or a function resolving it. */
  route: Route | (() => Promise<Route>)
  /** Trusted result-signing keys of the verifier (kid → Ed25519 public key). */
  keys: Map<string, KeyObject>
  timeout?: number
  maxClockSkew?: number
  now?: () => number
}

/** Background check: asks a verifier service to appraise, checks its signed answer. */
export class RemoteVerifier implements EvidenceAppraiser {
  readonly node: Node
  readonly options: RemoteVerifierOptions
  #route: Route | undefined

  constructor(node: Node, options: RemoteVerifierOptions) {
    this.node = node
    this.options = options
    if (typeof options.route !== 'function') this.#route = options.route
  }

  /**
   * The whole exchange (opening the route's channels when needed, the request, the answer) is
   * bounded by `timeout`: a verifier that is down gives ERR_VERIFIER_UNAVAILABLE then, never a hang.
   */
  async appraise(req: AppraisalRequest, signal?: AbortSignal): Promise<AttestationResult> {
    const timeout = this.options.timeout ?? DEFAULT_VERIFIER_TIMEOUT_MS
    const started = this.node.now()
    const route = await deadline(timeout, signal, () => this.#resolve())
    const body: Record<string, unknown> = { op: 'appraise', evidence: req.evidence, handle: req.expectedHandle, attesterStaticPub: req.attesterStaticPub }
    if (req.identifier !== undefined) body['identifier'] = req.identifier
    let r: Record<string, unknown>
    try {
      r = await verifierRequest(this.node, route, body, Math.max(1, timeout - (this.node.now() - started)), signal)
    } catch (err) {
      if (isThroughlineError(err, 'ERR_VERIFIER_UNAVAILABLE') && typeof this.options.route === 'function') this.#route = undefined // resolve again next time
      throw err
    }
    if (typeof r['token'] !== 'string') throw tlError('ERR_ATTEST_VERIFIER_FAILED', 'the verifier service sent no result token', { details: { reason: 'missing_token' } })
    const now = (this.options.now ?? (() => this.node.now()))()
    const result = verifyResultToken(r['token'], this.options.keys, now, this.options.maxClockSkew ?? DEFAULT_MAX_CLOCK_SKEW_MS)
    if (!sameBytes(result.nonce, req.expectedHandle) || !sameBytes(result.keyAttestation.pub, req.attesterStaticPub)) {
      throw tlError('ERR_ATTEST_VERIFIER_FAILED', 'the verifier result is about other evidence (nonce or key differ)', { details: { reason: 'result_binding' } })
    }
    return result
  }

  async #resolve(): Promise<Route> {
    if (this.#route !== undefined) return this.#route
    const f = this.options.route as () => Promise<Route>
    this.#route = await f()
    return this.#route
  }
}

/** Runs `f`, failing with ERR_VERIFIER_UNAVAILABLE after `ms` or when it fails (ERR_ABORTED on `signal`). */
function deadline<T>(ms: number, signal: AbortSignal | undefined, f: () => Promise<T>): Promise<T> {
  return withDeadline(
    ms,
    () => tlError('ERR_VERIFIER_UNAVAILABLE', `the verifier service could not be reached within ${ms} ms`),
    () =>
      f().catch((err: unknown) => {
        throw isThroughlineError(err, 'ERR_VERIFIER_UNAVAILABLE') ? err : tlError('ERR_VERIFIER_UNAVAILABLE', `cannot reach the verifier service: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }),
    signal,
  )
}

export interface PassportClientOptions {
  /** Route to the verifier worker inside a secure channel that attested this node to the verifier. */
  route: Route | (() => Promise<Route>)
  timeout?: number
  renewalThreshold?: number
  now?: () => number
}

/** A prover's passport: fetched from a verifier service, refreshed when past its renewal threshold. */
export class PassportClient implements PassportSource {
  readonly node: Node
  readonly options: PassportClientOptions
  #token: string | undefined
  #iat = 0
  #exp = 0
  #pending: Promise<string> | undefined

  constructor(node: Node, options: PassportClientOptions) {
    this.node = node
    this.options = options
  }

  async token(signal?: AbortSignal): Promise<string> {
    const now = (this.options.now ?? (() => this.node.now()))()
    const threshold = this.options.renewalThreshold ?? DEFAULT_RENEWAL_THRESHOLD
    if (this.#token !== undefined && now < this.#iat + (this.#exp - this.#iat) * threshold) return this.#token
    this.#pending ??= this.#fetch(signal).finally(() => {
      this.#pending = undefined
    })
    return this.#pending
  }

  async #fetch(signal?: AbortSignal): Promise<string> {
    const timeout = this.options.timeout ?? DEFAULT_VERIFIER_TIMEOUT_MS
    const started = this.node.now()
    const route = await deadline(timeout, signal, async () => (typeof this.options.route === 'function' ? this.options.route() : this.options.route))
    const r = await verifierRequest(this.node, route, { op: 'passport' }, Math.max(1, timeout - (this.node.now() - started)), signal)
    if (typeof r['token'] !== 'string') throw tlError('ERR_ATTEST_PROVER_FAILED', 'the verifier service sent no passport')
    const payload = readResultToken(r['token'])
    this.#token = r['token']
    this.#iat = payload.iat
    this.#exp = payload.exp
    return r['token']
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

/** What {@link enrolWithVerifier} needs of a TPM vault (a `TpmVault`). */
export interface EnrollingVault {
  ekPublic(): Promise<Uint8Array>
  tpmPublic(handle: string): Promise<{ public: Uint8Array }>
  activateCredential(akHandle: string, credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array>
}

/**
 * Enrols the attestation key `akHandle` of `vault` with the verifier service at `route` (inside a
 * secure channel): `enrolStart` with the EK and AK public areas, TPM2_ActivateCredential on the
 * credential it answers, `enrolFinish` with the released secret — both requests on the same
 * channel. Resolves with the AK's key id. Refusals are ERR_ATTEST_ENROL_FAILED with
 * `details.reason` (`ek_not_allowed`, `ak_attributes`, `secret_mismatch`, `activation_failed`, ...),
 * ERR_VERIFIER_DENIED when the service does not enrol, ERR_VERIFIER_UNAVAILABLE when it does not answer.
 */
export async function enrolWithVerifier(node: Node, route: Route, vault: EnrollingVault, akHandle: string, timeout = DEFAULT_VERIFIER_TIMEOUT_MS): Promise<string> {
  const ekPublic = await vault.ekPublic()
  const akPublic = (await vault.tpmPublic(akHandle)).public
  const started = await verifierRequest(node, route, { op: 'enrolStart', ekPublic, akPublic }, timeout)
  const blob = started['credentialBlob']
  const enc = started['encryptedSecret']
  if (!(blob instanceof Uint8Array) || !(enc instanceof Uint8Array)) throw tlError('ERR_ATTEST_ENROL_FAILED', 'the verifier service sent no credential', { details: { reason: 'bad_reply' } })
  let secret: Uint8Array
  try {
    secret = await vault.activateCredential(akHandle, blob, enc)
  } catch (err) {
    throw tlError('ERR_ATTEST_ENROL_FAILED', `the TPM could not activate the verifier's credential: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { reason: 'activation_failed' } })
  }
  const done = await verifierRequest(node, route, { op: 'enrolFinish', secret }, timeout)
  if (typeof done['ak'] !== 'string') throw tlError('ERR_ATTEST_ENROL_FAILED', 'the verifier service did not name the enrolled AK', { details: { reason: 'bad_reply' } })
  return done['ak']
}
