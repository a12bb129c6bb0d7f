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
 *
 * Failures reply `{ ok: false, code, message }` with a stable code (ERR_BAD_REQUEST,
 * ERR_VERIFIER_DENIED, ERR_ATTEST_EVIDENCE, ...).
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
import { signResult, verifyResultToken, type ResultSigner } from '../attest/token.ts'
import type { AttestationResult } from '../attest/types.ts'
import type { AppraisalPolicy, Verifier } from '../attest/verifier.ts'
import type { AppraisalRequest, EvidenceAppraiser, PassportSource } from '../channel/attestation.ts'
import type { SecureChannel, SecureListener } from '../channel/secure-channel.ts'
import { DEFAULT_MAX_CLOCK_SKEW_MS, DEFAULT_RENEWAL_THRESHOLD } from '../attest/constants.ts'
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
  /** Counters (diagnostics). */
  readonly stats = { appraisals: 0, passports: 0, refused: 0 }

  constructor(node: Node, options: VerifierServiceOptions) {
    this.node = node
    this.verifier = options.verifier
    this.signer = options.signer
    this.admins = new Set(options.admins ?? [])
    this.#onChanged = options.onReferenceValuesChanged
    this.#onPolicy = options.onPolicyChanged
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
      ctx.reply(msg, pack({ ok: false, code, message }))
    }
  }

  async #changed(): Promise<void> {
    try {
      await this.#onChanged?.(this.verifier.referenceValues.list())
    } catch (err) {
      this.node.logger.error('verifier: saving the reference values failed', { error: err })
    }
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
      default:
        throw tlError('ERR_BAD_REQUEST', `unknown verifier op ${String(req['op']).slice(0, 32)}`)
    }
  }
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
    const code = typeof r?.['code'] === 'string' && r['code'] === 'ERR_VERIFIER_DENIED' ? 'ERR_VERIFIER_DENIED' : 'ERR_ATTEST_VERIFIER_FAILED'
    throw tlError(code, `the verifier service refused: ${String(r?.['code'] ?? '')} ${String(r?.['message'] ?? '')}`.trim(), { details: { reason: 'verifier_refused', remoteCode: r?.['code'] } })
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

/** Runs `f`, failing with ERR_VERIFIER_UNAVAILABLE after `ms` (or ERR_ABORTED on `signal`). */
async function deadline<T>(ms: number, signal: AbortSignal | undefined, f: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(tlError('ERR_VERIFIER_UNAVAILABLE', `the verifier service could not be reached within ${ms} ms`)), ms)
    onAbort = () => reject(tlError('ERR_ABORTED', 'aborted while reaching the verifier service'))
    signal?.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([
      f().catch((err: unknown) => {
        throw isThroughlineError(err, 'ERR_VERIFIER_UNAVAILABLE') ? err : tlError('ERR_VERIFIER_UNAVAILABLE', `cannot reach the verifier service: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }),
      stop,
    ])
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
  }
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
    const payload = JSON.parse(Buffer.from(r['token'].split('.')[1] ?? '', 'base64url').toString('utf8')) as { iat?: number; exp?: number }
    this.#token = r['token']
    this.#iat = Number(payload.iat ?? 0)
    this.#exp = Number(payload.exp ?? 0)
    return r['token']
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}
