/**
 * Appraisal of TPM-shaped evidence (suites `tpm2` and `sim`) into an EAR-like
 * {@link AttestationResult}: pure TypeScript plus node:crypto.
 *
 * {@link Verifier.appraise} never throws for bad evidence: it returns a result whose `status` is
 * the worst tier of its trust vector, with a machine `reason` ({@link APPRAISAL_REASONS}) and a
 * human `detail`. Checks, in order (the first hard failure ends the appraisal):
 *
 * | # | check | failure reason | claims → status |
 * |---|---|---|---|
 * | 1 | suite expected, format and handle algorithm known | unexpected_suite, unknown_format | all 1 → none |
 * | 2 | evidence and quote body decode | malformed | all 1 → none |
 * | 3 | endorsement: sim device cert verifies under a trusted sim root, is valid now (± skew) and certifies body.akPub; tpm2: body.akPub is a pinned AK | untrusted_root, endorsement_invalid, endorsement_expired, unknown_ak | instanceIdentity 97, hardware 97 → contraindicated |
 * | 4 | TPMT_SIGNATURE (ECDSA P-256/SHA-256) over TPMS_ATTEST by the AK | bad_signature | instanceIdentity 99, hardware 97 → contraindicated |
 * | 5 | TPMS_ATTEST parses, magic 0xff544347, type quote; sim: qualifiedSigner = sim AK name | malformed | all 1 → none |
 * | 6 | extraData = expected handle (constant time) | handle_mismatch | instanceIdentity 99 → contraindicated |
 * | 7 | reported PCR values = quoted selection and hash to pcrDigest (hard fail) | pcr_digest_mismatch | executables 99 → contraindicated |
 * | 8 | clock: safe = 1; resetCount, restartCount never decrease; clock never goes back when both are unchanged (TPM clocks tick in ms: two quotes may share one), by at most the verifier time elapsed + maxClockSkewMs | clock_unsafe, clock_check_failed | hardware 96 → contraindicated |
 * | 9 | event-log replay from the cursor reproduces every quoted PCR the log covers; data hashes to its digest; re-sent entries identical | log_cursor_gap (executables 96), log_replay_mismatch (executables 99) | contraindicated |
 *
 * Then the policy, starting pessimistic and upgrading on evidence:
 * - instanceIdentity 2 (the endorsement verified);
 * - configuration: the last `config` event of the log (UTF-8 JSON `{debug, svn, firmware}`):
 *   debug false → 2; debug true → 32 `debug_enabled` (96 with `debug: 'contraindicated'`);
 *   no readable config → 36 `config_unknown`;
 * - executables: all PCRs of one unexpired reference-value set equal the quoted values → 2;
 *   otherwise 33 `reference_mismatch` when `requireReferenceValues` (default), else 0;
 *   svn below `minSvn` (or unknown while `minSvn` is set) → 32 `svn_below_min`;
 * - hardware: tpm2 with a pinned AK → 2; sim → 32 `sim_untrusted` unless the policy says
 *   `trustSim: true` (then 2). **The default policy never yields affirming for sim.**
 *
 * `reason` is the first finding of the worst tier in the order debug_enabled, svn_below_min,
 * reference_mismatch, config_unknown, sim_untrusted; it is absent when affirming. An exception in
 * the verifier itself gives status none, reason `verifier_malfunction`, every claim −1.
 *
 * **Cursors and clock state.** The caller keeps one {@link LogCursor} per channel (or per
 * attester) between rounds and passes it as `log`: it holds the replayed PCR aggregate, the
 * entries seen (for idempotent re-sends), the last config event and the last clock reading of
 * the attester. It restarts (log from 0) when the AK or the TPM resetCount changes. Without a
 * cursor, the log must start at 0 and the clock is checked against the last reading of the same
 * AK kept by this verifier (at most {@link MAX_TRACKED_AKS} AKs).
 *
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { isThroughlineError, tlError } from '../errors.ts'
import { parseAttest, type ClockInfo, type TpmAttest } from '../vault/tpm/attest.ts'
import { TPM_ST } from '../vault/tpm/constants.ts'
import { DEFAULT_MAX_CLOCK_SKEW_MS, DEFAULT_RESULT_TTL_MS } from './constants.ts'
import { checkEvidence, decodeQuoteBody } from './evidence.ts'
import { spkiKeyId } from './keys.ts'
import { checkQuotePcrs, simAkName, verifyQuoteSignature } from './quote.ts'
import { verifyDeviceCert } from './sim.ts'
import {
  FORMAT,
  HANDLE_ALG,
  TIER_RANK,
  type AttestationResult,
  type EventLogDelta,
  type Evidence,
  type QuoteBody,
  type Tier,
  type TrustVector,
} from './types.ts'

/** Machine reasons of a result, with their meaning. */
export const APPRAISAL_REASONS = {
  unexpected_suite: 'the evidence is of a suite the relying party does not expect',
  unknown_format: 'the evidence format or handle algorithm is unknown',
  malformed: 'the evidence, quote body or TPMS_ATTEST does not decode, or is not a quote by this AK',
  untrusted_root: 'the device certificate is not issued by a trusted sim root',
  endorsement_invalid: 'the device certificate is missing, does not verify, or certifies another key',
  endorsement_expired: 'the device certificate is outside its validity window',
  unknown_ak: 'the TPM attestation key is not one of the pinned keys',
  bad_signature: 'the quote signature does not verify under the attestation key',
  handle_mismatch: 'the quote is bound to another handle (replay, relay or another channel)',
  pcr_digest_mismatch: 'the reported PCR values are not the quoted ones',
  clock_unsafe: 'the TPM reports its clock as not safe (it may have rolled back)',
  clock_check_failed: 'the TPM clock or reset/restart counters went back, or the clock ran ahead',
  log_cursor_gap: 'the event log starts beyond the entries the verifier holds',
  log_replay_mismatch: 'replaying the event log does not give the quoted PCRs, or an entry was altered',
  debug_enabled: 'the platform configuration has debug on',
  svn_below_min: 'the security version number is below the policy minimum (or unknown)',
  reference_mismatch: 'no unexpired reference-value set matches the quoted PCRs',
  config_unknown: 'the event log has no readable config event',
  sim_untrusted: 'sim evidence, and the policy does not trust sim',
  verifier_malfunction: 'the verifier failed while appraising',
} as const

export type AppraisalReason = keyof typeof APPRAISAL_REASONS

/** Most AKs whose last clock reading a verifier keeps (for appraisals without a cursor). */
export const MAX_TRACKED_AKS = 4096

// =============================================================================================
// Reference values

/** A named set of acceptable PCR values (SHA-256 bank), hex; optional expiry (ms since the epoch). */
export interface ReferenceValueSet {
  name: string
  pcrs: Record<number, string>
  expires?: number
}

/**
 * The reference-value store: named sets; evidence matches when every PCR of at least one
 * unexpired set equals the quoted value (several acceptable sets, e.g. firmware A and B).
 */
export class ReferenceValues {
  readonly #sets = new Map<string, { set: ReferenceValueSet; values: Map<number, Uint8Array> }>()

  constructor(sets: Iterable<ReferenceValueSet> = []) {
    for (const s of sets) this.add(s)
  }

  /** Adds a set, or replaces the set of the same name. */
  add(set: ReferenceValueSet): void {
    if (typeof set?.name !== 'string' || set.name.length === 0 || set.name.length > 128) throw tlError('ERR_INVALID_ARGUMENT', 'a reference-value set needs a name of 1..128 characters')
    if (set.expires !== undefined && !Number.isFinite(set.expires)) throw tlError('ERR_INVALID_ARGUMENT', `reference-value set ${set.name}: expires must be a time in ms`)
    const values = new Map<number, Uint8Array>()
    const pcrs: Record<number, string> = {}
    for (const [k, hex] of Object.entries(set.pcrs ?? {})) {
      const p = Number(k)
      if (!Number.isInteger(p) || p < 0 || p > 23) throw tlError('ERR_INVALID_ARGUMENT', `reference-value set ${set.name}: PCR ${k} is not 0..23`)
      if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) throw tlError('ERR_INVALID_ARGUMENT', `reference-value set ${set.name}: PCR ${p} is not 64 hex digits (SHA-256)`)
      values.set(p, new Uint8Array(Buffer.from(hex, 'hex')))
      pcrs[p] = hex.toLowerCase()
    }
    if (values.size === 0) throw tlError('ERR_INVALID_ARGUMENT', `reference-value set ${set.name} has no PCRs`)
    const copy: ReferenceValueSet = set.expires === undefined ? { name: set.name, pcrs } : { name: set.name, pcrs, expires: set.expires }
    this.#sets.set(set.name, { set: copy, values })
  }

  /** Removes a set; false when there was none of that name. */
  remove(name: string): boolean {
    return this.#sets.delete(name)
  }

  /** The sets (copies), in insertion order. */
  list(): ReferenceValueSet[] {
    return [...this.#sets.values()].map(({ set }) => ({ ...set, pcrs: { ...set.pcrs } }))
  }

  get size(): number {
    return this.#sets.size
  }

  /** The name of the first unexpired set whose PCRs all equal `quoted`, or undefined. */
  match(quoted: ReadonlyMap<number, Uint8Array>, now: number): string | undefined {
    for (const { set, values } of this.#sets.values()) {
      if (set.expires !== undefined && now >= set.expires) continue
      let all = true
      for (const [p, v] of values) {
        const q = quoted.get(p)
        if (q === undefined || !bytesEqual(q, v)) {
          all = false
          break
        }
      }
      if (all) return set.name
    }
    return undefined
  }
}

// =============================================================================================
// Policy, cursor, options

/** An appraisal policy. */
export interface AppraisalPolicy {
  id: string
  /** Lowest acceptable svn of the config event; unset: svn is not checked. */
  minSvn?: number
  /** What debug:true in the config gives (default warning). */
  debug?: 'warning' | 'contraindicated'
  /** Without a matching reference-value set, executables is 33 (warning). Default true. */
  requireReferenceValues?: boolean
  /** Sim evidence under a trusted sim root may reach hardware 2 (tests only). Default false. */
  trustSim?: boolean
  /** Tolerance on certificate validity and on the TPM clock running ahead (ms, default 30 000). */
  maxClockSkewMs?: number
}

/** The default policy: reference values required, debug a warning, sim never affirming. */
export const DEFAULT_APPRAISAL_POLICY: Readonly<AppraisalPolicy> = Object.freeze({ id: 'throughline-default-v1' })

/** A TPM clock reading as remembered between rounds. */
export interface ClockState {
  /** Key id of the AK (keys.ts spkiKeyId). */
  ak: string
  clock: bigint
  resetCount: number
  restartCount: number
  /** Verifier time of the reading (ms). */
  at: number
}

/** The per-channel state of delta evidence: what the verifier holds of one attester's event log. */
export interface LogCursor {
  /** Entries replayed so far (the next expected `from`). */
  count: number
  /** Aggregate PCR values after replaying `count` entries; PCRs no entry touched are absent. */
  pcrs: Map<number, Uint8Array>
  /** PCR and digest of every replayed entry, so re-sent entries are accepted only when identical. */
  digests: { pcr: number; digest: Uint8Array }[]
  /** Data of the last `config` event (undefined when none, or when it carried no data). */
  config?: Uint8Array | undefined
  /** AK and TPM resetCount the log belongs to; a change restarts the cursor. */
  ak?: string
  resetCount?: number
  /** The attester's last clock reading (checked by the next round). */
  clock?: ClockState
}

/** An empty cursor. */
export function newLogCursor(): LogCursor {
  return { count: 0, pcrs: new Map(), digests: [] }
}

/** Trust anchors of a verifier. */
export interface TrustAnchors {
  /** SPKI DER of trusted sim roots. */
  simRoots?: readonly Uint8Array[]
  /** SPKI DER of enrolled TPM attestation keys. */
  tpmAks?: readonly Uint8Array[]
}

export interface VerifierOptions {
  id: string
  trustAnchors: TrustAnchors
  referenceValues?: ReferenceValues
  policy?: AppraisalPolicy
  /** Clock (ms since the epoch); default Date.now. */
  now?: () => number
  /** Lifetime of results (ms); default DEFAULT_RESULT_TTL_MS. */
  resultTtlMs?: number
}

/** One appraisal request. */
export interface AppraiseRequest {
  evidence: Evidence
  /** The handle the relying party computed from its own view of the handshake. */
  expectedHandle: Uint8Array
  /** The Noise static key the attester proved in this handshake (goes to keyAttestation.pub). */
  attesterStaticPub: Uint8Array
  identifier?: string
  /** The per-channel cursor (mutated on success of the replay). */
  log?: LogCursor
  /** Suites the relying party accepts (default: tpm2 and sim). */
  expectedSuites?: readonly string[]
}

// =============================================================================================
// Trust vector helpers

const CLAIMS: readonly (keyof TrustVector)[] = ['instanceIdentity', 'configuration', 'executables', 'fileSystem', 'hardware', 'runtimeOpaque', 'storageOpaque', 'sourcedData']

/** The tier of one claim value; undefined for 0 (no claim). */
export function claimTier(v: number): Tier | undefined {
  if (v === 0) return undefined
  if (v >= 2 && v <= 31) return 'affirming'
  if (v >= 32 && v <= 95) return 'warning'
  if (v >= 96 && v <= 127) return 'contraindicated'
  return 'none'
}

/** The worst tier of a vector (by TIER_RANK); `none` when it makes no claim. */
export function worstTier(tv: TrustVector): Tier {
  let worst: Tier | undefined
  for (const c of CLAIMS) {
    const t = claimTier(tv[c])
    if (t !== undefined && (worst === undefined || TIER_RANK[t] > TIER_RANK[worst])) worst = t
  }
  return worst ?? 'none'
}

function vector(fill: number, set: Partial<TrustVector> = {}): TrustVector {
  const tv = {} as TrustVector
  for (const c of CLAIMS) tv[c] = fill
  return Object.assign(tv, set)
}

/** Peer attributes (ABAC) of a result, for the lifetime of the channel or until `exp`. */
export function resultAttributes(result: AttestationResult): Record<string, unknown> {
  const out: Record<string, unknown> = {
    'attest.status': result.status,
    'attest.suite': result.suite,
    'attest.iat': result.iat,
    'attest.exp': result.exp,
    'attest.verifier': result.verifierId,
    'attest.policy': result.policyId,
    'attest.trustVector': { ...result.trustVector },
  }
  if (result.reason !== undefined) out['attest.reason'] = result.reason
  return out
}

// =============================================================================================
// Verifier

/** A hard failure: ends the appraisal with this reason and vector. */
class Reject {
  readonly reason: AppraisalReason
  readonly detail: string
  readonly tv: TrustVector
  constructor(reason: AppraisalReason, detail: string, tv: TrustVector) {
    this.reason = reason
    this.detail = detail
    this.tv = tv
  }
}

const UNEXPECTED = (): TrustVector => vector(1)

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex')
}

interface ConfigClaims {
  debug: boolean
  svn?: number
  firmware?: string
}

/** Reads the config event's JSON; undefined when absent or unreadable. */
function readConfig(data: Uint8Array | undefined): ConfigClaims | undefined {
  if (data === undefined) return undefined
  let j: unknown
  try {
    j = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data))
  } catch {
    return undefined
  }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) return undefined
  const o = j as Record<string, unknown>
  if (typeof o['debug'] !== 'boolean') return undefined
  const out: ConfigClaims = { debug: o['debug'] }
  if (Number.isSafeInteger(o['svn']) && (o['svn'] as number) >= 0) out.svn = o['svn'] as number
  if (typeof o['firmware'] === 'string' && o['firmware'].length <= 128) out.firmware = o['firmware']
  return out
}

interface Finding {
  reason: AppraisalReason
  tier: Tier
  detail: string
}

/** Appraises TPM-shaped evidence (see the module note). */
export class Verifier {
  readonly id: string
  readonly referenceValues: ReferenceValues
  readonly #simRoots: Uint8Array[]
  readonly #tpmAks: Uint8Array[]
  readonly #now: () => number
  readonly #ttl: number
  #policy: AppraisalPolicy
  readonly #clocks = new Map<string, ClockState>()

  constructor(options: VerifierOptions) {
    if (typeof options?.id !== 'string' || options.id.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'a verifier needs an id')
    this.id = options.id
    this.#simRoots = (options.trustAnchors?.simRoots ?? []).map((k) => k.slice())
    this.#tpmAks = (options.trustAnchors?.tpmAks ?? []).map((k) => k.slice())
    this.referenceValues = options.referenceValues ?? new ReferenceValues()
    this.#policy = { ...(options.policy ?? DEFAULT_APPRAISAL_POLICY) }
    this.#now = options.now ?? Date.now
    this.#ttl = options.resultTtlMs ?? DEFAULT_RESULT_TTL_MS
    if (!Number.isSafeInteger(this.#ttl) || this.#ttl <= 0) throw tlError('ERR_INVALID_ARGUMENT', 'resultTtlMs must be a positive integer')
  }

  /**
   * Adds a TPM attestation key (SPKI DER) to the trust anchors, e.g. the `akSpki` of an AK enrolled
   * by credential activation (`enrolAk`, enrol.ts). Idempotent. In memory only: persist it with
   * the rest of the verifier's configuration.
   */
  enrolAk(spki: Uint8Array): void {
    if (!(spki instanceof Uint8Array) || spki.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'enrolAk: an SPKI DER (Uint8Array) expected')
    if (!this.#tpmAks.some((k) => bytesEqual(k, spki))) this.#tpmAks.push(Uint8Array.from(spki))
  }

  /** Lifetime of the results this verifier issues (ms). */
  get resultTtlMs(): number {
    return this.#ttl
  }

  get policy(): Readonly<AppraisalPolicy> {
    return this.#policy
  }

  /** Replaces the appraisal policy (applies to the next appraisal). */
  setPolicy(policy: AppraisalPolicy): void {
    if (typeof policy?.id !== 'string' || policy.id.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'a policy needs an id')
    this.#policy = { ...policy }
  }

  /** Appraises evidence. Resolves with a result for any evidence; rejects only with ERR_ABORTED. */
  async appraise(request: AppraiseRequest, signal?: AbortSignal): Promise<AttestationResult> {
    if (signal?.aborted === true) throw tlError('ERR_ABORTED', 'the appraisal was aborted')
    let now = Date.now()
    try {
      now = this.#now()
      return this.#appraise(request, now)
    } catch (err) {
      if (err instanceof Reject) return this.#result(request, now, worstTier(err.tv), err.tv, err.reason, err.detail)
      if (isThroughlineError(err, 'ERR_ATTEST_EVIDENCE') || isThroughlineError(err, 'ERR_TPM_MALFORMED')) {
        return this.#result(request, now, 'none', UNEXPECTED(), 'malformed', err.message)
      }
      const msg = err instanceof Error ? err.message : String(err)
      return this.#result(request, now, 'none', vector(-1), 'verifier_malfunction', `the verifier failed: ${msg}`)
    }
  }

  #result(req: AppraiseRequest, now: number, status: Tier, tv: TrustVector, reason: AppraisalReason | undefined, detail: string | undefined, claims?: AttestationResult['claims']): AttestationResult {
    const ev = req?.evidence as Partial<Evidence> | undefined
    const expected = req?.expectedSuites
    // The evidence's suite when it is one; else the suite the relying party expected (sim first).
    let suite: 'tpm2' | 'sim' = 'sim'
    if (ev?.suite === 'tpm2' || ev?.suite === 'sim') suite = ev.suite
    else if (expected !== undefined && !expected.includes('sim') && expected.includes('tpm2')) suite = 'tpm2'
    const keyAttestation: AttestationResult['keyAttestation'] = { pub: req?.attesterStaticPub instanceof Uint8Array ? req.attesterStaticPub.slice() : new Uint8Array(0) }
    if (typeof req?.identifier === 'string') keyAttestation.identifier = req.identifier
    const out: AttestationResult = {
      profile: 'tag:throughline.dev,2026:ear-v1',
      iat: now,
      exp: now + this.#ttl,
      verifierId: this.id,
      nonce: req?.expectedHandle instanceof Uint8Array ? req.expectedHandle.slice() : new Uint8Array(0),
      status,
      trustVector: tv,
      policyId: this.#policy.id,
      keyAttestation,
      suite,
    }
    if (detail !== undefined) out.detail = detail
    if (reason !== undefined) out.reason = reason
    if (claims !== undefined) out.claims = claims
    return out
  }

  #appraise(req: AppraiseRequest, now: number): AttestationResult {
    const policy = this.#policy
    const skew = policy.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS

    // 1. suite and format
    const raw = req.evidence as Partial<Evidence> | null
    const expected = req.expectedSuites ?? ['tpm2', 'sim']
    const suite = raw?.suite
    if ((suite !== 'tpm2' && suite !== 'sim') || !expected.includes(suite)) {
      throw new Reject('unexpected_suite', `evidence of suite ${String(suite).slice(0, 32)} where [${expected.join(', ')}] is expected`, UNEXPECTED())
    }
    const fmt = suite === 'sim' ? FORMAT.SIM_TPM2 : FORMAT.TPM2_QUOTE
    if (raw!.fmt !== fmt) throw new Reject('unknown_format', `unknown ${suite} evidence format ${String(raw!.fmt).slice(0, 64)} (expected ${fmt})`, UNEXPECTED())
    if (raw!.handleAlg !== HANDLE_ALG) throw new Reject('unknown_format', `unknown handle algorithm ${String(raw!.handleAlg).slice(0, 32)} (expected ${HANDLE_ALG})`, UNEXPECTED())

    // 2. decode (ERR_ATTEST_EVIDENCE → malformed)
    const evidence = checkEvidence(raw)
    const body = decodeQuoteBody(evidence.body)
    const akId = spkiKeyId(body.akPub)

    // 3. endorsement
    const endorsed = this.#endorse(suite, evidence, body, now, skew)

    // 4. signature
    let sigOk: boolean
    try {
      sigOk = verifyQuoteSignature(body.attest, body.sig, body.akPub)
    } catch (err) {
      throw new Reject('bad_signature', `the quote signature cannot be verified: ${err instanceof Error ? err.message : String(err)}`, vector(0, { instanceIdentity: 99, hardware: 97 }))
    }
    if (!sigOk) throw new Reject('bad_signature', 'the quote signature does not verify under the attestation key', vector(0, { instanceIdentity: 99, hardware: 97 }))

    // 5. structure
    let attest: TpmAttest
    try {
      attest = parseAttest(body.attest)
    } catch (err) {
      throw new Reject('malformed', err instanceof Error ? err.message : String(err), UNEXPECTED())
    }
    if (attest.type !== TPM_ST.ATTEST_QUOTE) throw new Reject('malformed', `TPMS_ATTEST type 0x${attest.type.toString(16)} is not a quote (0x8018)`, UNEXPECTED())
    if (suite === 'sim' && !bytesEqual(attest.qualifiedSigner, simAkName(body.akPub))) {
      throw new Reject('malformed', 'the quote names another signer than the attestation key', UNEXPECTED())
    }

    // 6. handle (constant time)
    const expectedHandle = req.expectedHandle
    const extra = attest.extraData
    if (!(expectedHandle instanceof Uint8Array) || expectedHandle.length !== extra.length || !timingSafeEqual(expectedHandle, extra)) {
      throw new Reject('handle_mismatch', 'handle mismatch: the quote is bound to another handle (replayed, relayed or from another channel)', vector(0, { instanceIdentity: 99 }))
    }

    // 7. PCR consistency (hard fail)
    const pcrProblem = checkQuotePcrs(attest, body.pcrs)
    if (pcrProblem !== undefined) {
      throw new Reject(pcrProblem.reason, pcrProblem.detail, pcrProblem.reason === 'malformed' ? UNEXPECTED() : vector(0, { executables: 99 }))
    }
    const quoted = new Map<number, Uint8Array>(body.pcrs)

    // 8. clock
    const cursor = req.log
    this.#checkClock(attest.clockInfo, akId, cursor, now, skew)

    // 9. event-log replay
    const c = cursor ?? newLogCursor()
    this.#replay(evidence.log, c, akId, attest.clockInfo.resetCount, quoted)

    // 10. policy
    const findings: Finding[] = []
    const tv = vector(0, { instanceIdentity: 2 })
    const config = readConfig(c.config)
    if (config === undefined) {
      tv.configuration = 36
      findings.push({ reason: 'config_unknown', tier: 'warning', detail: 'the event log has no readable config event' })
    } else if (config.debug) {
      const contra = policy.debug === 'contraindicated'
      tv.configuration = contra ? 96 : 32
      findings.push({ reason: 'debug_enabled', tier: contra ? 'contraindicated' : 'warning', detail: 'debug mode on' })
    } else {
      tv.configuration = 2
    }
    const refName = this.referenceValues.match(quoted, now)
    if (refName !== undefined) tv.executables = 2
    else if (policy.requireReferenceValues !== false) {
      tv.executables = 33
      findings.push({
        reason: 'reference_mismatch',
        tier: 'warning',
        detail: this.referenceValues.size === 0 ? 'no reference values are configured' : 'the quoted PCRs match no unexpired reference-value set',
      })
    }
    if (policy.minSvn !== undefined && (config?.svn === undefined || config.svn < policy.minSvn)) {
      if (tv.executables === 0 || tv.executables === 2) tv.executables = 32
      findings.push({ reason: 'svn_below_min', tier: 'warning', detail: `svn ${config?.svn ?? 'unknown'} is below the minimum ${policy.minSvn}` })
    }
    if (suite === 'tpm2' || policy.trustSim === true) tv.hardware = 2
    else {
      tv.hardware = 32
      findings.push({ reason: 'sim_untrusted', tier: 'warning', detail: 'sim evidence (the policy does not trust sim)' })
    }
    const order: AppraisalReason[] = ['debug_enabled', 'svn_below_min', 'reference_mismatch', 'config_unknown', 'sim_untrusted']
    findings.sort((a, b) => order.indexOf(a.reason) - order.indexOf(b.reason))
    const status = worstTier(tv)
    const worst = findings.filter((f) => f.tier === status)

    const claims: NonNullable<AttestationResult['claims']> = {
      ak: akId,
      firmwareVersion: `0x${attest.firmwareVersion.toString(16).padStart(16, '0')}`,
      clock: attest.clockInfo.clock.toString(),
      resetCount: attest.clockInfo.resetCount,
      restartCount: attest.clockInfo.restartCount,
      logEntries: c.count,
    }
    if (endorsed !== undefined) claims['subject'] = endorsed
    if (config !== undefined) {
      claims['debug'] = config.debug
      if (config.svn !== undefined) claims['svn'] = config.svn
      if (config.firmware !== undefined) claims['firmware'] = config.firmware
    }
    if (refName !== undefined) claims['referenceSet'] = refName
    for (const [p, v] of body.pcrs) claims[`pcr${p}`] = hex(v)

    const detail = worst.length > 0 ? worst.map((f) => f.detail).join('; ') : refName !== undefined ? `matches reference values ${JSON.stringify(refName)}` : status
    return this.#result(req, now, status, tv, worst[0]?.reason, detail, claims)
  }

  /** Step 3; returns the certified subject (sim) or undefined (tpm2). */
  #endorse(suite: 'tpm2' | 'sim', evidence: Evidence, body: QuoteBody, now: number, skew: number): string | undefined {
    const fail = (reason: AppraisalReason, detail: string): never => {
      throw new Reject(reason, detail, vector(0, { instanceIdentity: 97, hardware: 97 }))
    }
    if (suite === 'tpm2') {
      if (!this.#tpmAks.some((k) => bytesEqual(k, body.akPub))) fail('unknown_ak', `the TPM attestation key ${spkiKeyId(body.akPub)} is not enrolled with this verifier`)
      return undefined
    }
    const cert = evidence.endorsements?.[0]
    if (cert === undefined) return fail('endorsement_invalid', 'sim evidence without a device certificate')
    if (this.#simRoots.length === 0) return fail('untrusted_root', 'this verifier trusts no sim root')
    try {
      const c = verifyDeviceCert(cert, this.#simRoots, now, skew)
      if (!bytesEqual(c.akPub, body.akPub)) fail('endorsement_invalid', `the device certificate of ${JSON.stringify(c.subject)} certifies another attestation key`)
      return c.subject
    } catch (err) {
      if (err instanceof Reject) throw err
      if (isThroughlineError(err, 'ERR_ATTEST_VERIFIER_FAILED')) {
        const r = err.details?.['reason']
        fail(r === 'untrusted_root' || r === 'endorsement_expired' ? r : 'endorsement_invalid', err.message)
      }
      if (isThroughlineError(err, 'ERR_ATTEST_EVIDENCE')) fail('endorsement_invalid', err.message)
      throw err
    }
  }

  /** Step 8. */
  #checkClock(ci: ClockInfo, akId: string, cursor: LogCursor | undefined, now: number, skew: number): void {
    const fail = (reason: AppraisalReason, detail: string): never => {
      throw new Reject(reason, detail, vector(0, { hardware: 96 }))
    }
    if (!ci.safe) fail('clock_unsafe', 'the TPM clock is not safe (safe = 0): it may have rolled back since the last reading')
    const prev = cursor !== undefined ? (cursor.clock?.ak === akId ? cursor.clock : undefined) : this.#clocks.get(akId)
    if (prev !== undefined) {
      if (ci.resetCount < prev.resetCount) fail('clock_check_failed', `TPM resetCount went back from ${prev.resetCount} to ${ci.resetCount}`)
      if (ci.resetCount === prev.resetCount) {
        if (ci.restartCount < prev.restartCount) fail('clock_check_failed', `TPM restartCount went back from ${prev.restartCount} to ${ci.restartCount}`)
        if (ci.restartCount === prev.restartCount) {
          if (ci.clock < prev.clock) fail('clock_check_failed', `TPM clock went back: ${ci.clock} ms after ${prev.clock} ms with no reset or restart`)
          const ahead = Number(ci.clock - prev.clock) - (now - prev.at)
          if (ahead > skew) fail('clock_check_failed', `TPM clock advanced ${ci.clock - prev.clock} ms in ${now - prev.at} ms of verifier time (more than ${skew} ms ahead)`)
        }
      }
    }
    const state: ClockState = { ak: akId, clock: ci.clock, resetCount: ci.resetCount, restartCount: ci.restartCount, at: now }
    if (cursor !== undefined) cursor.clock = state
    else {
      this.#clocks.delete(akId)
      this.#clocks.set(akId, state)
      if (this.#clocks.size > MAX_TRACKED_AKS) this.#clocks.delete(this.#clocks.keys().next().value!)
    }
  }

  /** Step 9: replays `log` onto `cursor`; commits to the cursor only when it reproduces the quote. */
  #replay(log: EventLogDelta | undefined, cursor: LogCursor, akId: string, resetCount: number, quoted: ReadonlyMap<number, Uint8Array>): void {
    const fail = (reason: AppraisalReason, detail: string, executables: number): never => {
      throw new Reject(reason, detail, vector(0, { executables }))
    }
    const restart = cursor.ak !== undefined && (cursor.ak !== akId || cursor.resetCount !== resetCount)
    const base = restart ? newLogCursor() : cursor
    const delta = log ?? { from: base.count, entries: [] }
    if (delta.from > base.count) {
      fail('log_cursor_gap', `the event log starts at entry ${delta.from} but the verifier holds ${base.count} entries${restart ? ' (the platform was reset: send the log from 0)' : ''}`, 96)
    }
    const pcrs = new Map(base.pcrs)
    const digests = base.digests.slice()
    let config = base.config
    delta.entries.forEach((e, i) => {
      const idx = delta.from + i
      if (e.data !== undefined && !bytesEqual(createHash('sha256').update(e.data).digest(), e.digest)) {
        fail('log_replay_mismatch', `event-log entry ${idx} (${e.type}): its data does not hash to its digest`, 99)
      }
      const seen = digests[idx]
      if (seen !== undefined) {
        if (seen.pcr !== e.pcr || !bytesEqual(seen.digest, e.digest)) fail('log_replay_mismatch', `event-log entry ${idx} (${e.type}) differs from the one received before`, 99)
        return
      }
      const before = pcrs.get(e.pcr) ?? new Uint8Array(32)
      pcrs.set(e.pcr, new Uint8Array(createHash('sha256').update(before).update(e.digest).digest()))
      digests.push({ pcr: e.pcr, digest: e.digest.slice() })
      if (e.type === 'config') config = e.data?.slice()
    })
    for (const [p, v] of quoted) {
      const replayed = pcrs.get(p)
      if (replayed !== undefined && !bytesEqual(replayed, v)) {
        fail('log_replay_mismatch', `replaying the event log gives PCR ${p} = ${hex(replayed).slice(0, 16)}…, the quote has ${hex(v).slice(0, 16)}…`, 99)
      }
    }
    cursor.count = digests.length
    cursor.pcrs = pcrs
    cursor.digests = digests
    cursor.config = config
    cursor.ak = akId
    cursor.resetCount = resetCount
  }
}
