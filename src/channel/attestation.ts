/**
 * Attestation inside a secure channel: suite negotiation, evidence and passports in handshake
 * messages 2 and 3, post-handshake gate rounds, streaming re-attestation and passport refresh.
 * The channel (secure-channel.ts) owns the I/O; this module owns the decisions. Design and wire
 * fields: docs/attestation.md.
 *
 * ```
 * payload 1 attest = { v:1, expected:[suites wanted from the responder], post?:true }
 * payload 2 attest = { v:1, supported:[...], expected:[suites wanted from the initiator], post?:true,
 *                      chosen?, ev?: Evidence, ar?: token, deferred?:true }
 * payload 3 attest = { v:1, supported:[...], chosen?, ev?, ar?, deferred?:true, gate?:true }
 * ```
 * `gate` tells the responder that the initiator accepts it only after a post-handshake round, so
 * the responder waits for the initiator's READY before it opens.
 *
 * @module
 */
import { randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto'
import { pack } from 'msgpackr'
import { deriveHandle, mintContext, roundHashPoint } from '../attest/handle.ts'
import { DEFAULT_ATTEST_TIMEOUT_MS, DEFAULT_MAX_CLOCK_SKEW_MS, DEFAULT_RENEWAL_THRESHOLD } from '../attest/constants.ts'
import { checkEvidence, unpackChecked } from '../attest/evidence.ts'
import { verifyResultToken } from '../attest/token.ts'
import { type LogCursor, newLogCursor } from '../attest/verifier.ts'
import type { AttestSuite, AttestationResult, Attester, Evidence } from '../attest/types.ts'
import { ATTEST_SUITES } from '../attest/types.ts'
import { withDeadline } from '../deadline.ts'
import { type ErrorCode, tlError, type ThroughlineError, isThroughlineError } from '../errors.ts'
import { CLOSE_CAUSE, type CloseCause } from './messages.ts'

/** Where a node gets its passport (an attestation result token about its own static key). */
export interface PassportSource {
  /** A token valid now; implementations fetch a fresh one from their verifier when needed. */
  token(signal?: AbortSignal): Promise<string>
}

/** What an appraiser is asked (the handle was computed by the relying party from its own `h`). */
export interface AppraisalRequest {
  evidence: Evidence
  expectedHandle: Uint8Array
  attesterStaticPub: Uint8Array
  identifier?: string
  /** Per-channel event-log cursor (delta evidence across rounds). */
  log?: LogCursor
  expectedSuites?: string[]
}

/** Appraises evidence: a local `Verifier`, or a verifier service reached by route (background check). */
export interface EvidenceAppraiser {
  appraise(request: AppraisalRequest, signal?: AbortSignal): Promise<AttestationResult>
}

/** Attestation settings of one side of a channel (listener, initiator, or node-wide defaults). */
export interface AttestationOptions {
  /** Prover: what this node can produce evidence with. */
  attesters?: Attester[]
  /** Prover: this node's passport (suite `passport`). */
  passport?: PassportSource
  /** Relying party: suites accepted from the peer, in preference order. Empty: none required. */
  require?: AttestSuite[]
  /** Relying party: appraises the peer's evidence (needed when `require` has tpm2 or sim). */
  verifier?: EvidenceAppraiser
  /** Relying party: trusted passport issuers (verifier key id → Ed25519 public key). */
  passportIssuers?: Map<string, KeyObject>
  /** Relying party: evidence inside the handshake (default) or in a round right after it. */
  mode?: 'handshake' | 'post-handshake'
  /** Relying party: lowest status accepted (default `affirming`). */
  minStatus?: 'affirming' | 'warning'
  /** Relying party: one attestation step (evidence, appraisal, round) may take this long (ms). */
  timeout?: number
  /** Relying party: re-attest the peer every this many ms once open (0/undefined: never). */
  reattestInterval?: number
  maxClockSkew?: number
  /** Relying party: refresh a passport when this fraction of its lifetime has passed. */
  renewalThreshold?: number
  /**
   * Prover, as a responder: `never` keeps evidence out of handshake message 2, which goes to an
   * initiator that is not yet authenticated (evidence reveals platform details); the evidence then
   * comes in a round right after the handshake, and the initiator accepts that deferral (its
   * channel opens only once the round passed). Default `always`.
   */
  earlyEvidence?: 'always' | 'never'
}

/** Handed to the driver by its channel. */
export interface AttestationHost {
  readonly role: 'initiator' | 'responder'
  now(): number
  staticPublicKey(): Uint8Array
  remoteStaticKey(): Uint8Array
  handshakeHash(): Uint8Array
  identifier(): string | undefined
  sendRound(kind: 'request' | 'evidence' | 'result', body: Uint8Array): void
  /** Ends the channel with `cause`, telling the peer (encrypted), and failing with `err` locally. */
  fail(err: ThroughlineError): void
  /** A round that gated the channel passed. */
  gatePassed(): void
  /** The peer's result changed (attributes of the peer). */
  updated(result: AttestationResult): void
}

const MAX_SUITES = 8
const ROLE = { initiator: 'I', responder: 'R' } as const

/** The close cause of an attestation error code. */
export function causeOf(code: ErrorCode): CloseCause {
  switch (code) {
    case 'ERR_ATTEST_NO_MATCH':
      return CLOSE_CAUSE.NO_ATTEST_MATCH
    case 'ERR_ATTEST_PROVER_FAILED':
      return CLOSE_CAUSE.ATTEST_PROVER_FAILED
    case 'ERR_ATTEST_VERIFIER_FAILED':
    case 'ERR_ATTEST_EVIDENCE':
      return CLOSE_CAUSE.ATTEST_VERIFIER_FAILED
    case 'ERR_ATTEST_POLICY_DENY':
    case 'ERR_TRUST_POLICY':
      return CLOSE_CAUSE.POLICY_DENY
    case 'ERR_ATTEST_NO_VALID_RESULT':
      return CLOSE_CAUSE.NO_VALID_RESULT
    case 'ERR_VERIFIER_UNAVAILABLE':
      return CLOSE_CAUSE.VERIFIER_UNAVAILABLE
    case 'ERR_TIMEOUT':
    case 'ERR_HANDSHAKE_TIMEOUT':
      return CLOSE_CAUSE.TIMEOUT
    case 'ERR_IDENTITY_INVALID':
      return CLOSE_CAUSE.IDENTITY_INVALID
    default:
      return CLOSE_CAUSE.HANDSHAKE_FAILED
  }
}

/** The error code a close cause received from the peer maps to. */
export function codeOfCause(cause: CloseCause): ErrorCode {
  switch (cause) {
    case CLOSE_CAUSE.NO_ATTEST_MATCH:
      return 'ERR_ATTEST_NO_MATCH'
    case CLOSE_CAUSE.ATTEST_PROVER_FAILED:
      return 'ERR_ATTEST_PROVER_FAILED'
    case CLOSE_CAUSE.ATTEST_VERIFIER_FAILED:
      return 'ERR_ATTEST_VERIFIER_FAILED'
    case CLOSE_CAUSE.NO_VALID_RESULT:
      return 'ERR_ATTEST_NO_VALID_RESULT'
    case CLOSE_CAUSE.VERIFIER_UNAVAILABLE:
      return 'ERR_VERIFIER_UNAVAILABLE'
    case CLOSE_CAUSE.POLICY_DENY:
      return 'ERR_TRUST_POLICY'
    default:
      return 'ERR_CHANNEL_CLOSED'
  }
}

function suiteList(x: unknown, what: string): AttestSuite[] {
  if (x === undefined || x === null) return []
  if (!Array.isArray(x) || x.length > MAX_SUITES) throw tlError('ERR_CHANNEL_MESSAGE', `${what}: not a list of at most ${MAX_SUITES} suites`)
  const out: AttestSuite[] = []
  for (const s of x) if (typeof s === 'string' && (ATTEST_SUITES as readonly string[]).includes(s)) out.push(s as AttestSuite)
  return out
}

/** The attestation part of a handshake payload, checked. */
export interface AttestPayload {
  supported: AttestSuite[]
  expected: AttestSuite[]
  post: boolean
  chosen?: AttestSuite
  ev?: Evidence
  ar?: string
  deferred: boolean
  gate: boolean
}

export function parseAttestPayload(x: unknown, what: string): AttestPayload {
  if (x === undefined || x === null) return { supported: [], expected: [], post: false, deferred: false, gate: false }
  const p = x as Record<string, unknown>
  if (typeof p !== 'object' || p['v'] !== 1) throw tlError('ERR_CHANNEL_MESSAGE', `${what}: attestation field is not version 1`)
  const out: AttestPayload = {
    supported: suiteList(p['supported'], what),
    expected: suiteList(p['expected'], what),
    post: p['post'] === true,
    deferred: p['deferred'] === true,
    gate: p['gate'] === true,
  }
  if (p['chosen'] !== undefined) {
    const c = suiteList([p['chosen']], what)
    if (c.length === 0) throw tlError('ERR_CHANNEL_MESSAGE', `${what}: chosen suite is unknown`)
    out.chosen = c[0]
  }
  if (p['ev'] !== undefined && p['ev'] !== null) out.ev = checkEvidence(p['ev'])
  if (p['ar'] !== undefined && p['ar'] !== null) {
    if (typeof p['ar'] !== 'string' || p['ar'].length > 8192) throw tlError('ERR_ATTEST_EVIDENCE', `${what}: passport is not a token string of at most 8192 characters`)
    out.ar = p['ar']
  }
  return out
}

function pick(wanted: readonly AttestSuite[], offered: readonly AttestSuite[]): AttestSuite | undefined {
  return wanted.find((s) => offered.includes(s))
}

/** Bounds `run` by `ms`: the deadline aborts its signal and rejects with `code`. */
function within<T>(ms: number, what: string, code: ErrorCode, run: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal): Promise<T> {
  return withDeadline(ms, () => tlError(code, `${what} did not complete within ${ms} ms`, { details: { timeoutMs: ms } }), run, outer)
}

interface PendingRound {
  seq: number
  nonce: Uint8Array
  suite: AttestSuite
  timer: NodeJS.Timeout
  gate: boolean
}

/** The attestation state of one channel end. */
export class ChannelAttestation {
  readonly options: AttestationOptions
  readonly provides: AttestSuite[]
  readonly requires: AttestSuite[]
  #post: boolean
  #host: AttestationHost
  /** Suites the peer wants of us (from its payload) and whether it attests us after the handshake. */
  #peerExpected: AttestSuite[] = []
  #peerPost = false
  /** The suite we appraise the peer with. */
  #suite: AttestSuite | undefined
  #result: AttestationResult | undefined
  #cursor: LogCursor = newLogCursor()
  #seq = 0
  #lastRequestSeq = 0
  #serving = false
  #round: PendingRound | undefined
  #interval: NodeJS.Timeout | undefined
  #expiry: NodeJS.Timeout | undefined
  #closed = false
  /** Rounds completed (for diagnostics and tests). */
  rounds = 0

  constructor(host: AttestationHost, options: AttestationOptions = {}) {
    this.#host = host
    this.options = options
    this.provides = [...new Set<AttestSuite>([...(options.attesters ?? []).map((a) => a.suite), ...(options.passport ? (['passport'] as const) : [])])]
    this.requires = [...(options.require ?? [])]
    this.#post = options.mode === 'post-handshake'
    checkAttestationOptions(options)
  }

  /** The peer's current attestation result, once appraised. */
  get result(): AttestationResult | undefined {
    return this.#result
  }

  /** True when this end appraises its peer after the handshake (configured, or the peer deferred). */
  get post(): boolean {
    return this.#post
  }

  /** True when this end appraises its peer only after the handshake (the channel waits for a round). */
  get gated(): boolean {
    return this.#post && this.requires.length > 0
  }

  get timeout(): number {
    return this.options.timeout ?? DEFAULT_ATTEST_TIMEOUT_MS
  }

  // ---------------------------------------------------------------- handshake payloads

  /** Initiator: the attestation field of payload 1 (undefined when nothing is required). */
  payload1(): unknown {
    if (this.requires.length === 0) return undefined
    return this.post ? { v: 1, expected: this.requires, post: true } : { v: 1, expected: this.requires }
  }

  /** Responder: what payload 1 asked of us. */
  onPayload1(a1: unknown): void {
    const p = parseAttestPayload(a1, 'handshake payload 1')
    this.#peerExpected = p.expected
    this.#peerPost = p.post
  }

  /**
   * Prover: the attestation field of payload 2 (responder) or 3 (initiator). `prepare` runs the
   * Noise tokens of that message and returns h at its payload (h2* / h3*).
   */
  async proverPayload(prepare: () => Uint8Array, signal?: AbortSignal): Promise<unknown> {
    const role = ROLE[this.#host.role]
    const out: Record<string, unknown> = { v: 1, supported: this.provides }
    if (role === 'R') {
      out['expected'] = this.requires
      if (this.post) out['post'] = true
    } else if (this.gated) {
      out['gate'] = true
    }
    if (this.#peerExpected.length === 0) return this.provides.length === 0 && this.requires.length === 0 && out['gate'] === undefined ? undefined : out
    const chosen = pick(this.#peerExpected, this.provides)
    if (chosen === undefined) {
      throw tlError('ERR_ATTEST_NO_MATCH', `no matching attestation suite (prover side): the peer wants one of [${this.#peerExpected.join(', ')}], this node offers [${this.provides.join(', ')}]`, {
        details: { side: 'prover', reason: 'no_match' },
      })
    }
    out['chosen'] = chosen
    if (this.#peerPost || (role === 'R' && this.options.earlyEvidence === 'never')) {
      out['deferred'] = true
      return out
    }
    const hPoint = prepare()
    if (chosen === 'passport') out['ar'] = await this.#passportToken(signal)
    else out['ev'] = await this.#evidence(chosen, mintContext(role, chosen, hPoint, this.#host.staticPublicKey()), signal)
    return out
  }

  /** Prover side (initiator): payload 2 says what the responder wants of us. */
  onPeerRequirements(p: AttestPayload): void {
    this.#peerExpected = p.expected
    this.#peerPost = p.post
  }

  /**
   * Relying party: checks the attestation field of the peer's payload against our requirements.
   * `hPoint` = h just before that payload (Noise payloadHash()). Throws a typed error whose
   * {@link causeOf} is the close cause. Returns the peer's result, or undefined when nothing is
   * required or the appraisal waits for a post-handshake round.
   */
  async verifyPayload(p: AttestPayload, hPoint: Uint8Array, signal?: AbortSignal): Promise<AttestationResult | undefined> {
    if (this.requires.length === 0) return undefined
    const chosen = p.chosen !== undefined && this.requires.includes(p.chosen) ? p.chosen : pick(this.requires, p.supported)
    if (chosen === undefined || p.chosen === undefined) {
      throw tlError('ERR_ATTEST_NO_MATCH', `no matching attestation suite (verifier side): this node requires one of [${this.requires.join(', ')}], the peer offers [${p.supported.join(', ')}]`, {
        details: { side: 'verifier', reason: 'no_match' },
      })
    }
    this.#suite = chosen
    if (this.#post) return undefined
    if (p.deferred) {
      // The peer keeps its evidence out of the handshake (evidence privacy): appraise it in a gate
      // round right after the handshake instead; the channel opens only once that round passed.
      this.#post = true
      return undefined
    }
    const peerRole = this.#host.role === 'initiator' ? 'R' : 'I'
    const result = await this.#appraise(chosen, p, deriveHandle(peerRole, chosen, hPoint, this.#host.remoteStaticKey()), signal)
    this.#accept(result)
    return result
  }

  // ---------------------------------------------------------------- rounds (after the handshake)

  /** Called once the channel is keyed: starts the gate round (post mode) and the streaming timer. */
  start(): void {
    if (this.requires.length === 0) return
    if (this.post) this.#startRound(true)
    const every = this.options.reattestInterval ?? 0
    if (every > 0) {
      this.#interval = setInterval(() => {
        if (this.#round === undefined) this.#startRound(false)
      }, every)
      this.#interval.unref()
    }
  }

  /** Starts a round now; resolves with the new result (or rejects with the failure). */
  reattest(): Promise<AttestationResult> {
    if (this.requires.length === 0 || this.#suite === undefined) return Promise.reject(tlError('ERR_INVALID_ARGUMENT', 'this channel end requires no attestation of its peer'))
    return new Promise((resolve, reject) => {
      const onResult = (r: AttestationResult | ThroughlineError): void => (isThroughlineError(r) ? reject(r) : resolve(r))
      this.#waiters.push(onResult)
      if (this.#round === undefined) this.#startRound(false)
    })
  }

  #waiters: ((r: AttestationResult | ThroughlineError) => void)[] = []

  #startRound(gate: boolean): void {
    if (this.#closed || this.#suite === undefined) return
    const seq = ++this.#seq
    const nonce = new Uint8Array(randomBytes(32))
    const suite = this.#suite
    const timer = setTimeout(() => {
      this.#finishRound(tlError('ERR_TIMEOUT', `attestation round ${seq} (${suite}) did not complete within ${this.timeout} ms`, { details: { seq } }))
    }, this.timeout)
    this.#round = { seq, nonce, suite, timer, gate }
    this.#host.sendRound('request', pack({ seq, nonce, suite, logFrom: suite === 'passport' ? 0 : this.#cursor.count }))
  }

  /** Prover: the peer asks for evidence (or a fresh passport). */
  async onRequest(body: unknown): Promise<void> {
    const r = body as { seq?: unknown; nonce?: unknown; suite?: unknown; logFrom?: unknown } | null
    if (r === null || typeof r !== 'object' || !Number.isSafeInteger(r.seq) || !(r.nonce instanceof Uint8Array) || r.nonce.length < 16 || r.nonce.length > 32) {
      throw tlError('ERR_CHANNEL_MESSAGE', 'malformed attestation request')
    }
    const seq = r.seq as number
    if (seq <= this.#lastRequestSeq) return // stale (the old-driver rule)
    // An honest peer has one round open at a time: while we answer one, more are ignored (no
    // peer can make this end run its TPM back to back).
    if (this.#serving) return
    this.#lastRequestSeq = seq
    const suite = suiteList([r.suite], 'attestation request')[0]
    if (suite === undefined || !this.provides.includes(suite)) {
      this.#host.fail(tlError('ERR_ATTEST_NO_MATCH', `the peer asked for ${String(r.suite).slice(0, 16)} attestation, this node offers [${this.provides.join(', ')}]`, { details: { side: 'prover' } }))
      return
    }
    const logFrom = Number.isSafeInteger(r.logFrom) && (r.logFrom as number) >= 0 ? (r.logFrom as number) : 0
    this.#serving = true
    try {
      const body: Record<string, unknown> = { seq }
      if (suite === 'passport') body['ar'] = await this.#passportToken()
      else {
        const role = ROLE[this.#host.role]
        const hPoint = roundHashPoint(this.#host.handshakeHash(), r.nonce, role, seq)
        body['ev'] = await this.#evidence(suite, mintContext(role, suite, hPoint, this.#host.staticPublicKey(), logFrom))
      }
      if (!this.#closed) this.#host.sendRound('evidence', pack(body))
    } catch (err) {
      this.#host.fail(asAttestError(err, 'ERR_ATTEST_PROVER_FAILED'))
    } finally {
      this.#serving = false
    }
  }

  /** Relying party: evidence of the pending round. */
  async onEvidence(body: unknown): Promise<void> {
    const e = body as { seq?: unknown; ev?: unknown; ar?: unknown } | null
    const round = this.#round
    if (e === null || typeof e !== 'object' || round === undefined || e.seq !== round.seq) return // stale or unsolicited
    try {
      const p = parseAttestPayload({ v: 1, chosen: round.suite, ev: e.ev, ar: e.ar }, 'attestation evidence')
      const peerRole = this.#host.role === 'initiator' ? 'R' : 'I'
      const hPoint = roundHashPoint(this.#host.handshakeHash(), round.nonce, peerRole, round.seq)
      const result = await this.#appraise(round.suite, p, deriveHandle(peerRole, round.suite, hPoint, this.#host.remoteStaticKey()))
      if (this.#round !== round) return
      this.#accept(result)
      this.#host.sendRound('result', pack({ seq: round.seq, status: result.status }))
      this.#finishRound(result)
    } catch (err) {
      if (this.#round === round) this.#finishRound(asAttestError(err, 'ERR_ATTEST_VERIFIER_FAILED'))
    }
  }

  #finishRound(outcome: AttestationResult | ThroughlineError): void {
    const round = this.#round
    if (round === undefined) return
    clearTimeout(round.timer)
    this.#round = undefined
    for (const w of this.#waiters.splice(0)) w(outcome)
    if (isThroughlineError(outcome)) {
      this.#host.fail(outcome)
      return
    }
    this.rounds++
    if (round.gate) this.#host.gatePassed()
  }

  // ---------------------------------------------------------------- appraisal

  async #appraise(suite: AttestSuite, p: AttestPayload, expectedHandle: Uint8Array, signal?: AbortSignal): Promise<AttestationResult> {
    const remote = this.#host.remoteStaticKey()
    let result: AttestationResult
    if (suite === 'passport') {
      if (p.ar === undefined) throw tlError('ERR_ATTEST_VERIFIER_FAILED', 'the peer chose passport but sent no token', { details: { reason: 'missing_token' } })
      result = verifyResultToken(p.ar, this.options.passportIssuers!, this.#host.now(), this.options.maxClockSkew ?? DEFAULT_MAX_CLOCK_SKEW_MS)
      const pub = result.keyAttestation.pub
      if (pub.length !== remote.length || !timingSafeEqual(pub, remote)) {
        throw tlError('ERR_ATTEST_VERIFIER_FAILED', 'the passport is about another key than the one this channel authenticated', { details: { reason: 'key_binding' } })
      }
    } else {
      if (p.ev === undefined) throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the peer chose ${suite} but sent no evidence`, { details: { reason: 'missing_evidence' } })
      if (p.ev.suite !== suite) throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the peer sent ${p.ev.suite} evidence for suite ${suite}`, { details: { reason: 'suite_mismatch' } })
      const verifier = this.options.verifier!
      const request: AppraisalRequest = { evidence: p.ev, expectedHandle, attesterStaticPub: remote, log: this.#cursor, expectedSuites: this.requires }
      const id = this.#host.identifier()
      if (id !== undefined) request.identifier = id
      result = await within(this.timeout, 'the appraisal of the peer evidence', 'ERR_TIMEOUT', (s) => verifier.appraise(request, s), signal)
    }
    checkResult(result, this.options.minStatus ?? 'affirming')
    return result
  }

  #accept(result: AttestationResult): void {
    this.#result = result
    this.#host.updated(result)
    clearTimeout(this.#expiry)
    if (this.#suite !== 'passport' || this.#closed) return
    // Passports: refresh at the renewal threshold; without a fresh one by exp (+ skew), close.
    const now = this.#host.now()
    const life = Math.max(0, result.exp - result.iat)
    const refreshAt = result.iat + life * (this.options.renewalThreshold ?? DEFAULT_RENEWAL_THRESHOLD)
    const skew = this.options.maxClockSkew ?? DEFAULT_MAX_CLOCK_SKEW_MS
    const deadline = result.exp + Math.min(skew, life) - now
    this.#expiry = setTimeout(() => {
      if (this.#round === undefined) this.#startRound(false)
      this.#expiry = setTimeout(() => {
        this.#host.fail(tlError('ERR_ATTEST_NO_VALID_RESULT', `the peer's passport expired ${new Date(result.exp).toISOString()} and no fresh one came`, { details: { reason: 'expired' } }))
      }, Math.max(0, deadline - Math.max(0, refreshAt - now)))
      this.#expiry.unref()
    }, Math.max(0, refreshAt - now))
    this.#expiry.unref()
  }

  // ---------------------------------------------------------------- proving

  async #evidence(suite: AttestSuite, ctx: ReturnType<typeof mintContext>, signal?: AbortSignal): Promise<Evidence> {
    const attester = (this.options.attesters ?? []).find((a) => a.suite === suite)
    if (attester === undefined) throw tlError('ERR_ATTEST_PROVER_FAILED', `no ${suite} attester on this node`)
    try {
      return await within(this.timeout, `${suite} evidence`, 'ERR_TIMEOUT', (s) => attester.attest(ctx, s), signal)
    } catch (err) {
      throw asAttestError(err, 'ERR_ATTEST_PROVER_FAILED')
    }
  }

  async #passportToken(signal?: AbortSignal): Promise<string> {
    const source = this.options.passport
    if (source === undefined) throw tlError('ERR_ATTEST_PROVER_FAILED', 'no passport on this node')
    try {
      return await within(this.timeout, 'getting a passport', 'ERR_TIMEOUT', (s) => source.token(s), signal)
    } catch (err) {
      throw asAttestError(err, 'ERR_ATTEST_PROVER_FAILED')
    }
  }

  /** Stops timers; pending rounds fail. */
  close(err: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#interval)
    clearTimeout(this.#expiry)
    if (this.#round !== undefined) clearTimeout(this.#round.timer)
    this.#round = undefined
    for (const w of this.#waiters.splice(0)) w(err)
  }
}

/** Throws ERR_INVALID_ARGUMENT for settings that cannot work (checked when listening or connecting). */
export function checkAttestationOptions(options: AttestationOptions): void {
  if (options.mode !== undefined && options.mode !== 'handshake' && options.mode !== 'post-handshake') {
    throw tlError('ERR_INVALID_ARGUMENT', `attestation mode must be handshake or post-handshake, not ${String(options.mode)}`)
  }
  for (const s of options.require ?? []) {
    if (!(ATTEST_SUITES as readonly string[]).includes(s)) throw tlError('ERR_INVALID_ARGUMENT', `unknown attestation suite "${String(s)}" (one of ${ATTEST_SUITES.join(', ')})`)
    if (s === 'passport' && (options.passportIssuers === undefined || options.passportIssuers.size === 0)) {
      throw tlError('ERR_INVALID_ARGUMENT', 'requiring a passport needs passportIssuers (the verifier keys trusted to sign them)')
    }
    if (s !== 'passport' && options.verifier === undefined) throw tlError('ERR_INVALID_ARGUMENT', `requiring ${s} evidence needs a verifier (local or a verifier service)`)
  }
}

/** Throws unless `result` meets the relying party's minimum status. */
export function checkResult(result: AttestationResult, minStatus: 'affirming' | 'warning'): void {
  const detail = result.detail ?? result.reason ?? result.status
  if (result.status === 'affirming') return
  if (result.status === 'warning') {
    if (minStatus === 'warning') return
    throw tlError('ERR_ATTEST_POLICY_DENY', `the peer's attestation status is warning (${detail}); this node requires affirming`, { details: { reason: result.reason ?? 'warning', status: result.status } })
  }
  throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the peer's evidence did not pass appraisal: ${detail}`, { details: { reason: result.reason ?? result.status, status: result.status } })
}

function asAttestError(err: unknown, fallback: ErrorCode): ThroughlineError {
  if (isThroughlineError(err)) {
    if (err.code === 'ERR_INVALID_ARGUMENT' || err.code === 'ERR_ABORTED' || err.code.startsWith('ERR_TPM')) return tlError(fallback, err.message, { cause: err, details: { reason: 'attester_error' } })
    return err
  }
  return tlError(fallback, err instanceof Error ? err.message : String(err), { cause: err, details: { reason: fallback === 'ERR_ATTEST_PROVER_FAILED' ? 'attester_error' : 'verifier_malfunction' } })
}

/** Decodes a round body (msgpack) with a size limit. */
export function decodeRound(body: Uint8Array): unknown {
  return unpackChecked(body, 96 * 1024, 'attestation round message')
}
