/**
 * The `sim` attestation suite: a simulated platform with a TPM-shaped attester, so every
 * attestation path runs without hardware through **the same verifier code as tpm2** (real
 * TPMS_ATTEST / TPMT_SIGNATURE bytes, real ECDSA, real event-log replay).
 *
 * Sim evidence never satisfies the default appraisal policy: the verifier caps sim `hardware` at
 * 32 (warning) unless its policy says `trustSim: true` (see verifier.ts).
 *
 * ## Sim root and device certificate (`sim-device-cert-v1`)
 * A {@link SimRoot} is a test CA (Ed25519 by default, or ECDSA P-256). It certifies a platform's
 * attestation key (AK) with a **compact certificate of our own, not X.509**:
 * ```
 * cert = msgpack { tbs: bytes, sig: bytes }
 * tbs  = msgpack { v: 1, fmt: 'sim-device-cert-v1', subject: string, akPub: bytes (SPKI DER, P-256),
 *                  nbf: ms since epoch, exp: ms since epoch, issuer: key id of the root }
 * sig  = Ed25519(tbs) | ECDSA-P256-SHA256(tbs) as r ‖ s (IEEE P1363), by the root key
 * ```
 * The key id is hex of the first 16 bytes of SHA-256(root SPKI DER) (keys.ts). The signature is
 * over the `tbs` bytes as carried (never re-encoded). {@link verifyDeviceCert} checks it.
 *
 * ## Platform ({@link SimPlatform})
 * 24 SHA-256 PCRs (`extend`: pcr = SHA-256(pcr ‖ digest)), an event log (`measure`: digest =
 * SHA-256(data), logged with its data, then extended) and a synthetic measured boot on creation:
 * ```
 * PCR 0  firmware     "sim-firmware <firmware>"
 * PCR 1  config       {"debug":false,"svn":1,"firmware":"<firmware>"}   (UTF-8 JSON; the policy reads it)
 * PCR 4  bootloader   "sim-bootloader 1"
 * PCR 7  secure-boot  "sim-secure-boot enabled", then kernel "sim-kernel 1"
 * PCR 10 app          "sim-app throughline"
 * ```
 * A TPM-like clock (ms, strictly increasing between readings, resetCount, restartCount, safe), a
 * firmwareVersion, an ECDSA P-256 AK and a device certificate from the root in the options.
 * With `seed`, the AK, the random fault inputs and so the PCRs, handles and certificates are
 * reproducible (ECDSA signatures of node:crypto stay randomized).
 *
 * The AK private key never leaves this module: the platform offers no "quote these bytes" call.
 * Only {@link SimAttester.attest} quotes, and only for a context minted by the secure channel.
 *
 * ## Fault knobs ({@link SimFaults}) and the verifier reason each one produces
 * | knob | effect | reason |
 * |---|---|---|
 * | corruptSignature | flips a bit of the signature's s | bad_signature |
 * | wrongHandle | quotes the handle with one bit flipped | handle_mismatch |
 * | reuseLastEvidence | returns the previous evidence again (replay) | handle_mismatch |
 * | foreignChannelEvidence | quotes a handle of another channel (random hPoint and key) | handle_mismatch |
 * | untrustedRoot | device certificate from another (rogue) root | untrusted_root |
 * | expiredDeviceCert | device certificate that expired a day ago | endorsement_expired |
 * | pcrTamper | extends a PCR without a log entry after quoting, then reports the PCRs | pcr_digest_mismatch |
 * | logTamper | alters a logged entry's data (or digest) in the evidence | log_replay_mismatch |
 * | logGap | sends the log from one entry beyond what the verifier holds | log_cursor_gap |
 * | clockRollback | reports a clock 1 s below the last one it reported | clock_check_failed |
 * | clockUnsafe | reports safe = 0 | clock_unsafe |
 * | debug | re-measures the config with debug:true (PCR 1) | debug_enabled (warning) |
 * | svnBelowMin | re-measures the config with svn 0 (PCR 1) | svn_below_min (warning, with minSvn ≥ 1) |
 * | delayMs | sleeps first (honours the AbortSignal) | the caller's timeout |
 * | throw | the attester fails | ERR_ATTEST_PROVER_FAILED (thrown) |
 * | unknownFormat | fmt 'sim-unknown-v9' | unknown_format (status none) |
 *
 * @module
 */
import { createHash, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { pack } from 'msgpackr'
import { isThroughlineError, tlError } from '../errors.ts'
import type { ClockInfo } from '../vault/tpm/attest.ts'
import { PCR_COUNT } from '../vault/tpm/constants.ts'
import { normalizePcrs } from '../vault/tpm/marshal.ts'
import { DEFAULT_PCR_SELECTION, MAX_ENDORSEMENT_BYTES, MAX_EVENT_DATA } from './constants.ts'
import { encodeQuoteBody, unpackChecked } from './evidence.ts'
import { assertMinted, deriveHandle } from './handle.ts'
import { ed25519FromSeed, importSpki, isP256, p256FromSeed, seededBytes, spkiKeyId, spkiOf } from './keys.ts'
import { buildQuoteAttest, quotePcrDigest, signQuoteAttest, simAkName } from './quote.ts'
import { FORMAT, HANDLE_ALG, type AttestationContext, type Attester, type EventLogEntry, type Evidence } from './types.ts'
import type { ReferenceValueSet } from './verifier.ts'

/** The format id of a sim device certificate. */
export const SIM_DEVICE_CERT_FMT = 'sim-device-cert-v1'
/** The format id the `unknownFormat` fault sends. */
export const SIM_UNKNOWN_FMT = 'sim-unknown-v9'

// =============================================================================================
// Sim root and device certificates

/** The signed content of a sim device certificate. */
export interface SimDeviceCert {
  v: 1
  fmt: typeof SIM_DEVICE_CERT_FMT
  subject: string
  /** SPKI DER of the certified ECDSA P-256 attestation key. */
  akPub: Uint8Array
  /** Validity, ms since the epoch. */
  nbf: number
  exp: number
  /** Key id of the issuing root (hex, 32 characters). */
  issuer: string
}

function badCert(what: string): never {
  throw tlError('ERR_ATTEST_EVIDENCE', `sim device certificate: ${what}`, { details: { reason: 'endorsement_invalid' } })
}

/** Decodes a sim device certificate without checking its signature or validity (ERR_ATTEST_EVIDENCE when malformed). */
export function decodeDeviceCert(bytes: Uint8Array): { cert: SimDeviceCert; tbs: Uint8Array; sig: Uint8Array } {
  const outer = unpackChecked(bytes, MAX_ENDORSEMENT_BYTES, 'sim device certificate') as { tbs?: unknown; sig?: unknown } | null
  if (outer === null || typeof outer !== 'object' || !(outer.tbs instanceof Uint8Array) || !(outer.sig instanceof Uint8Array)) badCert('not {tbs, sig}')
  const tbs = outer.tbs as Uint8Array
  const sig = outer.sig as Uint8Array
  if (sig.length === 0 || sig.length > 132) badCert('signature size out of range')
  const c = unpackChecked(tbs, MAX_ENDORSEMENT_BYTES, 'sim device certificate tbs') as Partial<SimDeviceCert> | null
  if (c === null || typeof c !== 'object' || c.v !== 1 || c.fmt !== SIM_DEVICE_CERT_FMT) badCert(`not version 1 of ${SIM_DEVICE_CERT_FMT}`)
  if (typeof c.subject !== 'string' || c.subject.length > 256) badCert('subject is not a string of at most 256 characters')
  if (!(c.akPub instanceof Uint8Array) || c.akPub.length === 0 || c.akPub.length > 1024) badCert('akPub is not SPKI bytes')
  if (!Number.isSafeInteger(c.nbf) || !Number.isSafeInteger(c.exp) || (c.exp as number) < (c.nbf as number)) badCert('nbf/exp are not a validity window')
  if (typeof c.issuer !== 'string' || !/^[0-9a-f]{32}$/.test(c.issuer)) badCert('issuer is not a 32-hex-digit key id')
  const cert: SimDeviceCert = { v: 1, fmt: SIM_DEVICE_CERT_FMT, subject: c.subject, akPub: c.akPub, nbf: c.nbf as number, exp: c.exp as number, issuer: c.issuer }
  return { cert, tbs, sig }
}

function rootSign(key: KeyObject, data: Uint8Array): Uint8Array {
  return new Uint8Array(key.asymmetricKeyType === 'ed25519' ? sign(null, data, key) : sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }))
}

function rootVerify(key: KeyObject, data: Uint8Array, sig: Uint8Array): boolean {
  if (key.asymmetricKeyType === 'ed25519') return verify(null, data, key, sig)
  if (isP256(key)) return verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)
  return false
}

/**
 * Verifies a sim device certificate against trusted sim roots (SPKI DER) at `now` (ms), with
 * `skewMs` tolerance on its validity window. Returns the certificate. Errors:
 * - ERR_ATTEST_EVIDENCE (details.reason `endorsement_invalid`): malformed;
 * - ERR_ATTEST_VERIFIER_FAILED, details.reason `untrusted_root` (the issuer is no trusted root),
 *   `endorsement_invalid` (the signature does not verify under that root) or
 *   `endorsement_expired` (outside nbf..exp).
 */
export function verifyDeviceCert(bytes: Uint8Array, trustedRoots: readonly Uint8Array[], now: number, skewMs = 0): SimDeviceCert {
  const { cert, tbs, sig } = decodeDeviceCert(bytes)
  const root = trustedRoots.find((spki) => spkiKeyId(spki) === cert.issuer)
  if (root === undefined) {
    throw tlError('ERR_ATTEST_VERIFIER_FAILED', `sim device certificate of ${JSON.stringify(cert.subject)} is issued by ${cert.issuer}, which is not a trusted sim root`, {
      details: { reason: 'untrusted_root', issuer: cert.issuer },
    })
  }
  if (!rootVerify(importSpki(root, 'a trusted sim root'), tbs, sig)) {
    throw tlError('ERR_ATTEST_VERIFIER_FAILED', `sim device certificate of ${JSON.stringify(cert.subject)}: the signature does not verify under root ${cert.issuer}`, {
      details: { reason: 'endorsement_invalid', issuer: cert.issuer },
    })
  }
  if (now + skewMs < cert.nbf || now - skewMs > cert.exp) {
    const when = now > cert.exp ? `expired ${new Date(cert.exp).toISOString()}` : `is not valid before ${new Date(cert.nbf).toISOString()}`
    throw tlError('ERR_ATTEST_VERIFIER_FAILED', `sim device certificate of ${JSON.stringify(cert.subject)} ${when}`, {
      details: { reason: 'endorsement_expired', nbf: cert.nbf, exp: cert.exp, now },
    })
  }
  return cert
}

/** Options of {@link SimRoot.generate}. */
export interface SimRootOptions {
  /** Key algorithm (default ed25519). */
  alg?: 'ed25519' | 'p256'
  /** Reproducible key from this seed. */
  seed?: Uint8Array | string
}

/**
 * A simulated root CA that certifies sim attestation keys. Test fixtures only: the key lives in
 * memory, unless saved with {@link toPem} (the CLI keeps one per home) and read back with
 * {@link fromPrivateKey}.
 */
export class SimRoot {
  readonly name: string
  readonly alg: 'ed25519' | 'p256'
  /** SPKI DER of the root public key: what a verifier pins in `trustAnchors.simRoots`. */
  readonly publicKeySpki: Uint8Array
  /** Hex of the first 16 bytes of SHA-256(publicKeySpki): the `issuer` of its certificates. */
  readonly keyId: string
  readonly #key: KeyObject

  private constructor(name: string, alg: 'ed25519' | 'p256', key: KeyObject) {
    this.name = name
    this.alg = alg
    this.#key = key
    this.publicKeySpki = spkiOf(key)
    this.keyId = spkiKeyId(this.publicKeySpki)
  }

  /** A new root (random, or reproducible from `options.seed`). */
  static generate(name = 'sim-root', options: SimRootOptions = {}): SimRoot {
    const alg = options.alg ?? 'ed25519'
    if (alg !== 'ed25519' && alg !== 'p256') throw tlError('ERR_INVALID_ARGUMENT', `sim root algorithm must be ed25519 or p256, not ${String(alg)}`)
    const seed = options.seed === undefined ? randomBytes(32) : seedBytes(options.seed)
    const key = alg === 'ed25519' ? ed25519FromSeed(seededBytes(seed, `sim-root/${name}`, 32)) : p256FromSeed(seededBytes(seed, `sim-root/${name}`, 32))
    return new SimRoot(name, alg, key)
  }

  /**
   * A root over an existing private key (Ed25519 or ECDSA P-256), e.g. one read back from the
   * PKCS#8 PEM of {@link toPem}. ERR_INVALID_ARGUMENT for any other key.
   */
  static fromPrivateKey(name: string, key: KeyObject): SimRoot {
    if (key?.type !== 'private') throw tlError('ERR_INVALID_ARGUMENT', 'a sim root is made from a private key')
    if (key.asymmetricKeyType === 'ed25519') return new SimRoot(name, 'ed25519', key)
    if (isP256(key)) return new SimRoot(name, 'p256', key)
    throw tlError('ERR_INVALID_ARGUMENT', `a sim root key is Ed25519 or ECDSA P-256, not ${String(key.asymmetricKeyType)}`)
  }

  /** The root private key as PKCS#8 PEM (a secret: store it with mode 0600). */
  toPem(): string {
    return this.#key.export({ type: 'pkcs8', format: 'pem' }) as string
  }

  /** Issues a `sim-device-cert-v1` for an ECDSA P-256 attestation key (SPKI DER). */
  issueDeviceCert(o: { akPub: Uint8Array; subject: string; notBefore: number; notAfter: number }): Uint8Array {
    if (!isP256(importSpki(o.akPub, 'akPub'))) throw tlError('ERR_INVALID_ARGUMENT', 'a sim device certificate certifies an ECDSA P-256 key')
    if (typeof o.subject !== 'string' || o.subject.length > 256) throw tlError('ERR_INVALID_ARGUMENT', 'subject must be a string of at most 256 characters')
    if (!Number.isSafeInteger(o.notBefore) || !Number.isSafeInteger(o.notAfter) || o.notAfter < o.notBefore) {
      throw tlError('ERR_INVALID_ARGUMENT', 'notBefore/notAfter must be integers (ms) with notBefore <= notAfter')
    }
    const tbs: SimDeviceCert = { v: 1, fmt: SIM_DEVICE_CERT_FMT, subject: o.subject, akPub: o.akPub, nbf: o.notBefore, exp: o.notAfter, issuer: this.keyId }
    const tbsBytes = new Uint8Array(pack(tbs))
    return new Uint8Array(pack({ tbs: tbsBytes, sig: rootSign(this.#key, tbsBytes) }))
  }
}

function seedBytes(seed: Uint8Array | string): Uint8Array {
  return typeof seed === 'string' ? new Uint8Array(Buffer.from(seed, 'utf8')) : seed
}

// =============================================================================================
// Platform

/** Options of {@link SimPlatform}. */
export interface SimPlatformOptions {
  /** The root that certifies this platform's AK. */
  root: SimRoot
  /** Security version number in the config event (default 1). */
  svn?: number
  /** Debug mode in the config event (default false). */
  debug?: boolean
  /** Firmware name, measured into PCR 0 and named in the config (default 'sim-fw-1.0'). */
  firmware?: string
  /** TPMS_ATTEST.firmwareVersion (default 0x0001000200000000). */
  firmwareVersion?: bigint
  /** Source of the TPM clock in ms (default: ms since the platform was created, plus 1000). */
  clock?: () => number
  /** Reproducible AK, fault inputs and certificate (with a seeded root). */
  seed?: Uint8Array | string
  /** Subject of the device certificate (default `sim-device-<8 hex of the AK key id>`). */
  subject?: string
}

const DAY_MS = 86_400_000

/** Private state the attester needs and nothing outside this module gets: the AK private key. */
const akKeys = new WeakMap<SimPlatform, KeyObject>()

/** A simulated platform: PCRs, event log, TPM clock, AK and device certificate. */
export class SimPlatform {
  readonly root: SimRoot
  readonly firmware: string
  readonly firmwareVersion: bigint
  /** SPKI DER of the attestation key. */
  readonly akPub: Uint8Array
  /** The device certificate of the AK, from {@link root}. */
  readonly deviceCert: Uint8Array
  readonly subject: string
  readonly #pcrs: Uint8Array[] = Array.from({ length: PCR_COUNT }, () => new Uint8Array(32))
  readonly #log: EventLogEntry[] = []
  readonly #clockFn: () => number
  readonly #seed: Uint8Array | undefined
  #counter = 0
  #lastClock = -1n
  #resetCount = 0
  #restartCount = 0
  #svn: number
  #debug: boolean
  readonly #baseSvn: number
  readonly #baseDebug: boolean

  constructor(options: SimPlatformOptions) {
    if (!(options.root instanceof SimRoot)) throw tlError('ERR_INVALID_ARGUMENT', 'a sim platform needs a SimRoot (options.root)')
    this.root = options.root
    this.firmware = options.firmware ?? 'sim-fw-1.0'
    if (this.firmware.length > 128) throw tlError('ERR_INVALID_ARGUMENT', 'firmware name is at most 128 characters')
    this.firmwareVersion = options.firmwareVersion ?? 0x0001_0002_0000_0000n
    this.#svn = this.#baseSvn = options.svn ?? 1
    if (!Number.isSafeInteger(this.#svn) || this.#svn < 0) throw tlError('ERR_INVALID_ARGUMENT', 'svn must be a non-negative integer')
    this.#debug = this.#baseDebug = options.debug ?? false
    this.#seed = options.seed === undefined ? undefined : seedBytes(options.seed)
    const created = Date.now()
    this.#clockFn = options.clock ?? (() => Date.now() - created + 1000)
    const ak = this.#seed === undefined ? p256FromSeed(randomBytes(32)) : p256FromSeed(seededBytes(this.#seed, 'sim-ak', 32))
    akKeys.set(this, ak)
    this.akPub = spkiOf(ak)
    this.subject = options.subject ?? `sim-device-${spkiKeyId(this.akPub).slice(0, 8)}`
    const now = Date.now()
    this.deviceCert = this.root.issueDeviceCert({ akPub: this.akPub, subject: this.subject, notBefore: now - DAY_MS, notAfter: now + 365 * DAY_MS })
    this.#boot()
  }

  /** The synthetic measured boot (on creation and after {@link reboot}). */
  #boot(): void {
    this.measure(0, 'firmware', `sim-firmware ${this.firmware}`)
    this.measure(1, 'config', this.#configJson())
    this.measure(4, 'bootloader', 'sim-bootloader 1')
    this.measure(7, 'secure-boot', 'sim-secure-boot enabled')
    this.measure(7, 'kernel', 'sim-kernel 1')
    this.measure(10, 'app', 'sim-app throughline')
  }

  #configJson(): string {
    return JSON.stringify({ debug: this.#debug, svn: this.#svn, firmware: this.firmware })
  }

  /** Current svn and debug mode (the last measured config). */
  get svn(): number {
    return this.#svn
  }

  get debug(): boolean {
    return this.#debug
  }

  get resetCount(): number {
    return this.#resetCount
  }

  get restartCount(): number {
    return this.#restartCount
  }

  /** A copy of PCR `i`. */
  pcr(i: number): Uint8Array {
    checkPcr(i)
    return this.#pcrs[i]!.slice()
  }

  /** `[index, value]` of the given PCRs (ascending, copies). */
  pcrValues(pcrs: readonly number[] = DEFAULT_PCR_SELECTION): [number, Uint8Array][] {
    return normalizePcrs(pcrs).map((p) => [p, this.#pcrs[p]!.slice()])
  }

  /** A reference-value set holding the current values of `pcrs` (for verifier tests and enrolment). */
  referenceSet(name: string, pcrs: readonly number[] = DEFAULT_PCR_SELECTION, expires?: number): ReferenceValueSet {
    const values: Record<number, string> = {}
    for (const [p, v] of this.pcrValues(pcrs)) values[p] = Buffer.from(v).toString('hex')
    return expires === undefined ? { name, pcrs: values } : { name, pcrs: values, expires }
  }

  /** A copy of the whole event log. */
  get eventLog(): EventLogEntry[] {
    return this.#log.map(copyEntry)
  }

  /** Extends PCR `i` with a 32-byte digest: pcr = SHA-256(pcr ‖ digest). Not logged. */
  extend(i: number, digest: Uint8Array): void {
    checkPcr(i)
    if (!(digest instanceof Uint8Array) || digest.length !== 32) throw tlError('ERR_INVALID_ARGUMENT', 'a SHA-256 PCR is extended with a 32-byte digest')
    this.#pcrs[i] = new Uint8Array(createHash('sha256').update(this.#pcrs[i]!).update(digest).digest())
  }

  /** Measures `data`: digest = SHA-256(data), logged (with the data when at most MAX_EVENT_DATA bytes) and extended into `pcr`. */
  measure(pcr: number, type: string, data: Uint8Array | string): EventLogEntry {
    checkPcr(pcr)
    if (typeof type !== 'string' || type.length === 0 || type.length > 64) throw tlError('ERR_INVALID_ARGUMENT', 'an event type is a string of 1..64 characters')
    const bytes = typeof data === 'string' ? new Uint8Array(Buffer.from(data, 'utf8')) : data.slice()
    const digest = new Uint8Array(createHash('sha256').update(bytes).digest())
    const entry: EventLogEntry = { pcr, digest, type }
    if (bytes.length <= MAX_EVENT_DATA) entry.data = bytes
    this.#log.push(entry)
    this.extend(pcr, digest)
    return copyEntry(entry)
  }

  /** Measures a new config event (PCR 1) when svn or debug change: a run-time reconfiguration. */
  configure(c: { debug?: boolean; svn?: number }): void {
    const debug = c.debug ?? this.#debug
    const svn = c.svn ?? this.#svn
    if (!Number.isSafeInteger(svn) || svn < 0) throw tlError('ERR_INVALID_ARGUMENT', 'svn must be a non-negative integer')
    if (debug === this.#debug && svn === this.#svn) return
    this.#debug = debug
    this.#svn = svn
    this.measure(1, 'config', this.#configJson())
  }

  /** A platform reset: resetCount + 1, restartCount 0, PCRs cleared, a new log from a fresh measured boot. */
  reboot(): void {
    this.#resetCount++
    this.#restartCount = 0
    for (let i = 0; i < PCR_COUNT; i++) this.#pcrs[i] = new Uint8Array(32)
    this.#log.length = 0
    this.#svn = this.#baseSvn
    this.#debug = this.#baseDebug
    this.#boot()
  }

  /** A TPM restart (resume from hibernation): restartCount + 1; PCRs and log are kept. */
  restart(): void {
    this.#restartCount++
  }

  /** Reads the TPM clock: ms, strictly increasing between readings. */
  readClock(): ClockInfo {
    const raw = this.#clockFn()
    if (!Number.isFinite(raw) || raw < 0) throw tlError('ERR_ATTEST_PROVER_FAILED', `the sim clock returned ${raw}`)
    let clock = BigInt(Math.floor(raw))
    if (clock <= this.#lastClock) clock = this.#lastClock + 1n
    this.#lastClock = clock
    return { clock, resetCount: this.#resetCount, restartCount: this.#restartCount, safe: true }
  }

  /** `n` random bytes, reproducible when the platform has a seed. */
  random(n: number): Uint8Array {
    return this.#seed === undefined ? new Uint8Array(randomBytes(n)) : seededBytes(this.#seed, 'sim-random', n, this.#counter++)
  }
}

function checkPcr(i: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= PCR_COUNT) throw tlError('ERR_INVALID_ARGUMENT', `PCR index ${i} is not an integer in [0, ${PCR_COUNT})`)
}

function copyEntry(e: EventLogEntry): EventLogEntry {
  const c: EventLogEntry = { pcr: e.pcr, digest: e.digest.slice(), type: e.type }
  if (e.data !== undefined) c.data = e.data.slice()
  return c
}

// =============================================================================================
// Attester

/** Fault-injection knobs of a {@link SimAttester} (mutable; all off by default). See the module table. */
export interface SimFaults {
  corruptSignature: boolean
  wrongHandle: boolean
  reuseLastEvidence: boolean
  foreignChannelEvidence: boolean
  untrustedRoot: boolean
  expiredDeviceCert: boolean
  pcrTamper: boolean
  logTamper: boolean
  logGap: boolean
  clockRollback: boolean
  clockUnsafe: boolean
  debug: boolean
  svnBelowMin: boolean
  /** Sleep this long (ms) before answering; 0 = none. */
  delayMs: number
  throw: boolean
  unknownFormat: boolean
}

/** All knobs off. */
export function noFaults(): SimFaults {
  return {
    corruptSignature: false,
    wrongHandle: false,
    reuseLastEvidence: false,
    foreignChannelEvidence: false,
    untrustedRoot: false,
    expiredDeviceCert: false,
    pcrTamper: false,
    logTamper: false,
    logGap: false,
    clockRollback: false,
    clockUnsafe: false,
    debug: false,
    svnBelowMin: false,
    delayMs: 0,
    throw: false,
    unknownFormat: false,
  }
}

/** Options of {@link SimAttester}. */
export interface SimAttesterOptions {
  /** PCRs quoted (default DEFAULT_PCR_SELECTION: 0, 1, 4, 7, 10). */
  pcrs?: readonly number[]
  /** Initial fault knobs. */
  faults?: Partial<SimFaults>
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(tlError('ERR_ABORTED', 'the sim attestation was aborted'))
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(tlError('ERR_ABORTED', 'the sim attestation was aborted'))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** The `sim` attester: TPM-shaped quotes of a {@link SimPlatform}, with fault knobs. */
export class SimAttester implements Attester {
  readonly suite = 'sim' as const
  readonly platform: SimPlatform
  /** Mutable fault knobs (see the module table). */
  readonly faults: SimFaults
  /** PCRs quoted (normalized). */
  readonly pcrSelection: readonly number[]
  #last: Evidence | undefined
  #lastResetCount: number | undefined
  #rogueRoot: SimRoot | undefined
  #saved: { debug: boolean; svn: number } | undefined
  #lastReportedClock: bigint | undefined

  constructor(platform: SimPlatform, options: SimAttesterOptions = {}) {
    if (!(platform instanceof SimPlatform)) throw tlError('ERR_INVALID_ARGUMENT', 'a SimAttester needs a SimPlatform')
    this.platform = platform
    this.faults = { ...noFaults(), ...options.faults }
    this.pcrSelection = normalizePcrs(options.pcrs ?? DEFAULT_PCR_SELECTION)
    if (this.pcrSelection.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'a quote selects at least one PCR')
  }

  /** A platform and its attester in one step. */
  static create(options: SimPlatformOptions & SimAttesterOptions): SimAttester {
    return new SimAttester(new SimPlatform(options), options)
  }

  /** The last evidence this attester produced. */
  get lastEvidence(): Evidence | undefined {
    return this.#last
  }

  /** Evidence over a context minted by the secure channel (ERR_INVALID_ARGUMENT for any other). */
  async attest(ctx: AttestationContext, signal?: AbortSignal): Promise<Evidence> {
    assertMinted(ctx)
    if (ctx.suite !== 'sim') throw tlError('ERR_ATTEST_PROVER_FAILED', `the sim attester cannot attest for suite ${ctx.suite}`)
    if (signal?.aborted === true) throw tlError('ERR_ABORTED', 'the sim attestation was aborted')
    const f = this.faults
    if (f.delayMs > 0) await sleep(f.delayMs, signal)
    if (f.throw) throw tlError('ERR_ATTEST_PROVER_FAILED', 'the sim attester failed (fault knob throw)', { details: { fault: 'throw' } })
    if (f.reuseLastEvidence && this.#last !== undefined) return this.#last
    try {
      const ev = this.#quote(ctx)
      this.#last = ev
      return ev
    } catch (err) {
      if (isThroughlineError(err)) throw err
      throw tlError('ERR_ATTEST_PROVER_FAILED', 'the sim attester failed', { cause: err })
    }
  }

  #quote(ctx: AttestationContext): Evidence {
    const p = this.platform
    const f = this.faults
    if (f.debug || f.svnBelowMin) {
      // Knobs on: re-measure the config with them (remembering the config from before the knobs).
      this.#saved ??= { debug: p.debug, svn: p.svn }
      p.configure({ debug: f.debug ? true : this.#saved.debug, svn: f.svnBelowMin ? 0 : this.#saved.svn })
    } else if (this.#saved !== undefined) {
      p.configure(this.#saved)
      this.#saved = undefined
    }
    let handle = ctx.handle
    if (f.wrongHandle) {
      handle = handle.slice()
      handle[0]! ^= 0x01
    }
    if (f.foreignChannelEvidence) handle = deriveHandle(ctx.role, ctx.suite, p.random(32), p.random(32))

    const quoted = p.pcrValues(this.pcrSelection)
    const clockInfo = p.readClock()
    let clock = clockInfo.clock
    if (f.clockRollback) {
      // Below the last clock this attester reported (or below now on the first quote).
      const below = this.#lastReportedClock ?? clock
      clock = below > 1000n ? below - 1000n : 0n
    }
    this.#lastReportedClock = clock
    const attest = buildQuoteAttest({
      qualifiedSigner: simAkName(p.akPub),
      extraData: handle,
      clock,
      resetCount: clockInfo.resetCount,
      restartCount: clockInfo.restartCount,
      safe: !f.clockUnsafe,
      firmwareVersion: p.firmwareVersion,
      pcrs: this.pcrSelection,
      pcrDigest: quotePcrDigest(quoted),
    })
    const sig = signQuoteAttest(attest, akKeys.get(p)!)
    if (f.corruptSignature) sig[sig.length - 1]! ^= 0x01

    // pcrTamper: a PCR is extended, unlogged, between the quote and the PCR read.
    let reported = quoted
    if (f.pcrTamper) {
      p.extend(this.pcrSelection[this.pcrSelection.length - 1]!, p.random(32))
      reported = p.pcrValues(this.pcrSelection)
    }

    const log = p.eventLog
    const rebooted = this.#lastResetCount !== undefined && this.#lastResetCount !== clockInfo.resetCount
    this.#lastResetCount = clockInfo.resetCount
    let from = rebooted || ctx.logFrom > log.length ? 0 : ctx.logFrom
    if (f.logTamper && from >= log.length) from = 0
    if (f.logGap) from += 1
    const entries = log.slice(from)
    if (f.logTamper && entries.length > 0) {
      const e = entries[entries.length - 1]!
      if (e.data !== undefined && e.data.length > 0) e.data[0]! ^= 0x01
      else e.digest[0]! ^= 0x01
    }

    let cert = p.deviceCert
    const now = Date.now()
    if (f.untrustedRoot) {
      this.#rogueRoot ??= SimRoot.generate('rogue-sim-root')
      cert = this.#rogueRoot.issueDeviceCert({ akPub: p.akPub, subject: p.subject, notBefore: now - DAY_MS, notAfter: now + DAY_MS })
    } else if (f.expiredDeviceCert) {
      cert = p.root.issueDeviceCert({ akPub: p.akPub, subject: p.subject, notBefore: now - 30 * DAY_MS, notAfter: now - DAY_MS })
    }

    return {
      suite: 'sim',
      fmt: f.unknownFormat ? SIM_UNKNOWN_FMT : FORMAT.SIM_TPM2,
      handleAlg: HANDLE_ALG,
      body: new Uint8Array(encodeQuoteBody({ v: 1, attest, sig, pcrs: reported, akPub: p.akPub })),
      endorsements: [cert],
      log: { from, entries },
    }
  }
}
