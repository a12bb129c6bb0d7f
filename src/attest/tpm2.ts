/**
 * The `tpm2` suite attester: TPM2_Quote by an attestation key (AK) in a {@link TpmVault}, with the
 * channel-derived handle as qualifyingData, and the measurement log kept beside the TPM.
 *
 * ## Evidence (format `tpm2-quote-v1`, see types.ts)
 * ```
 * Evidence { suite: 'tpm2', fmt: 'tpm2-quote-v1', handleAlg: 'sha256/v1',
 *   body: msgpack { v: 1,
 *     attest: TPMS_ATTEST  (magic ff544347, type 8018, extraData = the 32-byte handle)
 *     sig:    TPMT_SIGNATURE (ECDSA 0x0018, SHA-256 0x000B, TPM2B r, TPM2B s) over SHA-256(attest)
 *     pcrs:   [[index, SHA-256 PCR value], ...] ascending (their SHA-256 is the quote's pcrDigest)
 *     akPub:  SPKI DER of the AK's P-256 public key },
 *   log: { from, entries } (when the attester has a {@link MeasurementLog}) }
 * ```
 * No endorsements: the AK is trusted because the verifier pinned it (`trustAnchors.tpmAks`), by
 * hand from {@link Tpm2Attester.akPublicSpki}, or after credential activation (`enrolAk` in
 * enrol.ts: MakeCredential to the TPM's EK, `TpmVault.activateCredential`, Keylime's method).
 *
 * ## Known gaps
 * - **No EK certificate chain.** Credential activation binds the AK (an owner-hierarchy key under
 *   the vault's SRK) to the TCG ECC P-256 EK, but the EK itself is trusted on first use: its
 *   certificate and the manufacturer CA are not checked. Enrolment must run over a trusted path.
 * - **swtpm proves protocol correctness, not silicon binding**: it has no manufacturer EK, so tests
 *   against it show the structures, signatures and bindings are right — nothing about hardware.
 * - The AK lives in the owner hierarchy, so the TPM obfuscates resetCount, restartCount and
 *   firmwareVersion in its quotes (a fixed offset per signing key; `clock` and `safe` are plain):
 *   compare them only between quotes of the same AK.
 *
 * ## Quote oracles (notes/attestation.md pitfall 2)
 * {@link Tpm2Attester.attest} quotes only contexts minted by the secure channel from its own live
 * handshake ({@link assertMinted}); there is no "sign these bytes" method. Whoever holds the vault
 * itself can of course still call `vault.quote`: keep the vault inside the attested process.
 *
 * ## Measurement log and TPM restarts
 * {@link MeasurementLog} extends SHA-256(data) into a PCR (through the vault) and records the event.
 * PCRs reset on every TPM restart (swtpm `startup-clear`, a reboot): the recorded log then no longer
 * matches the TPM, and evidence fails the verifier's replay. {@link MeasurementLog.check} detects
 * this; {@link MeasurementLog.clear} then {@link MeasurementLog.measureBoot} re-measures. A process
 * dying between an extend and saving the log leaves the same mismatch, with the same remedy.
 * The first quote after a TPM reset (its resetCount changed) carries the log from entry 0 whatever
 * the context's cursor, as the sim attester does: a verifier restarts its cursor on a reset.
 * Replays start from the reset values (zeros; all ones for the locality PCRs 17–22).
 *
 * @module
 */
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { writeFileAtomic } from '../atomic-file.ts'
import { isThroughlineError, tlError, type ThroughlineError } from '../errors.ts'
import type { TpmVault } from '../vault/tpm-vault.ts'
import { TPM_ALG, eccPublicKeyObject, encodeSignature, normalizePcrs } from '../vault/tpm/index.ts'
import { DEFAULT_PCR_SELECTION, MAX_EVENT_DATA, MAX_LOG_ENTRIES } from './constants.ts'
import { checkLog, decodeEvidence, encodeEvidence, encodeQuoteBody } from './evidence.ts'
import { assertMinted } from './handle.ts'
import type { ReferenceValueSet } from './verifier.ts'
import { FORMAT, HANDLE_ALG, type AttestationContext, type Attester, type EventLogDelta, type EventLogEntry, type Evidence } from './types.ts'

/** What a {@link MeasurementLog} needs of the TPM: extend and read SHA-256 PCRs ({@link TpmVault} has both). */
export type PcrBank = Pick<TpmVault, 'pcrExtend' | 'pcrRead'>

/**
 * A synthetic measured boot, the same shape the sim platform measures (sim.ts `SimPlatform`), so
 * one reference-value policy appraises both suites: the same event types on the same PCRs and
 * the same config JSON, and — given the same measured bytes — the same PCR values.
 * {@link bootRecipeEvents} turns it into events. Strings are measured as UTF-8.
 */
export interface BootRecipe {
  /** The firmware name: named in the config (PCR 1) and, unless {@link firmwareImage} is given, measured into PCR 0. */
  firmware: string
  /** Security version number: in the config (PCR 1). */
  svn: number
  /** Debug mode: in the config (PCR 1). */
  debug: boolean
  /** What PCR 0 measures (type `firmware`); default the firmware name. The sim measures `sim-firmware <firmware>`. */
  firmwareImage?: string | Uint8Array
  /** The bootloader: PCR 4, type `bootloader`. */
  bootloader: string | Uint8Array
  /** The secure-boot state (policy/db identifier): PCR 7, type `secure-boot`. */
  secureBoot: string | Uint8Array
  /** The kernel, measured after secure boot into PCR 7 (type `kernel`) when present, as the sim does. */
  kernel?: string | Uint8Array
  /** The application: PCR 10, type `app`. */
  app: string | Uint8Array
}

/** One measurement to make: `data` is hashed with SHA-256 and extended into `pcr`. */
export interface Measurement {
  pcr: number
  type: string
  data: Uint8Array
}

const utf8 = (s: string | Uint8Array): Uint8Array => (typeof s === 'string' ? new Uint8Array(Buffer.from(s, 'utf8')) : Uint8Array.from(s))

/**
 * The boot of a default {@link SimPlatform} (sim.ts) as a recipe: measured into a TPM, it gives the
 * same events and PCR values as the sim platform, so one reference-value set fits both suites.
 */
export const SIM_PLATFORM_BOOT: Readonly<BootRecipe> = Object.freeze({
  firmware: 'sim-fw-1.0',
  svn: 1,
  debug: false,
  firmwareImage: 'sim-firmware sim-fw-1.0',
  bootloader: 'sim-bootloader 1',
  secureBoot: 'sim-secure-boot enabled',
  kernel: 'sim-kernel 1',
  app: 'sim-app throughline',
})

/**
 * The events of a boot recipe, in measuring order (the sim platform's order):
 * ```
 * PCR 0  firmware     firmwareImage ?? firmware
 * PCR 1  config       {"debug":false,"svn":N,"firmware":"<firmware>"}  (UTF-8 JSON, exactly these keys in this order)
 * PCR 4  bootloader   bootloader
 * PCR 7  secure-boot  secureBoot, then kernel (type `kernel`) when given
 * PCR 10 app          app
 * ```
 */
export function bootRecipeEvents(recipe: BootRecipe): Measurement[] {
  if (recipe === null || typeof recipe !== 'object') throw tlError('ERR_INVALID_ARGUMENT', 'a boot recipe is an object')
  if (typeof recipe.firmware !== 'string') throw tlError('ERR_INVALID_ARGUMENT', 'boot recipe: firmware must be a string')
  if (!Number.isSafeInteger(recipe.svn) || recipe.svn < 0) throw tlError('ERR_INVALID_ARGUMENT', `boot recipe: svn must be a non-negative integer, not ${String(recipe.svn)}`)
  if (typeof recipe.debug !== 'boolean') throw tlError('ERR_INVALID_ARGUMENT', 'boot recipe: debug must be a boolean')
  for (const k of ['firmwareImage', 'bootloader', 'secureBoot', 'kernel', 'app'] as const) {
    const optional = k === 'firmwareImage' || k === 'kernel'
    if ((!optional || recipe[k] !== undefined) && typeof recipe[k] !== 'string' && !(recipe[k] instanceof Uint8Array)) {
      throw tlError('ERR_INVALID_ARGUMENT', `boot recipe: ${k} must be a string or bytes`)
    }
  }
  const config = JSON.stringify({ debug: recipe.debug, svn: recipe.svn, firmware: recipe.firmware })
  const out: Measurement[] = [
    { pcr: 0, type: 'firmware', data: utf8(recipe.firmwareImage ?? recipe.firmware) },
    { pcr: 1, type: 'config', data: utf8(config) },
    { pcr: 4, type: 'bootloader', data: utf8(recipe.bootloader) },
    { pcr: 7, type: 'secure-boot', data: utf8(recipe.secureBoot) },
  ]
  if (recipe.kernel !== undefined) out.push({ pcr: 7, type: 'kernel', data: utf8(recipe.kernel) })
  out.push({ pcr: 10, type: 'app', data: utf8(recipe.app) })
  return out
}

const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return new Uint8Array(h.digest())
}

/** The value of SHA-256 PCR `pcr` after a TPM reset: zeros, but all ones for the locality PCRs 17–22. */
export function pcrResetValue(pcr: number): Uint8Array {
  return new Uint8Array(32).fill(pcr >= 17 && pcr <= 22 ? 0xff : 0)
}

/**
 * Replays `entries` onto `start` (default: every PCR at its reset value): `pcr = SHA-256(pcr ‖ digest)`
 * per entry. Returns the PCRs the entries touched (and those in `start`).
 */
export function replayLog(entries: readonly EventLogEntry[], start?: ReadonlyMap<number, Uint8Array>): Map<number, Uint8Array> {
  const pcrs = new Map<number, Uint8Array>()
  for (const [i, v] of start ?? []) pcrs.set(i, Uint8Array.from(v))
  for (const e of entries) pcrs.set(e.pcr, sha256(pcrs.get(e.pcr) ?? pcrResetValue(e.pcr), e.digest))
  return pcrs
}

function copyEntry(e: EventLogEntry): EventLogEntry {
  const out: EventLogEntry = { pcr: e.pcr, digest: Uint8Array.from(e.digest), type: e.type }
  if (e.data !== undefined) out.data = Uint8Array.from(e.data)
  return out
}

/** The measurement log file (written by {@link MeasurementLog.save}). */
interface LogFile {
  format: 'throughline-measurement-log'
  version: 1
  entries: Array<{ pcr: number; type: string; digest: string; data?: string }>
}

/** Largest log file accepted by {@link MeasurementLog.load} (checked before reading it). */
const MAX_LOG_FILE = 8 * 1024 * 1024

/**
 * An event log kept beside the TPM: each {@link measure} extends SHA-256(data) into a PCR and
 * records `{pcr, digest, type, data}`. Measurements (and quotes by an attester using this log) run
 * one at a time, so the log always matches the PCRs a quote covers. See the module note on restarts.
 */
export class MeasurementLog {
  /** The TPM the measurements go to. */
  readonly bank: PcrBank
  readonly #entries: EventLogEntry[]
  #queue: Promise<unknown> = Promise.resolve()

  /** A log over `bank`, starting empty (or with `entries` already measured, e.g. from a file). */
  constructor(bank: PcrBank, entries: readonly EventLogEntry[] = []) {
    if (bank === null || typeof bank !== 'object' || typeof bank.pcrExtend !== 'function' || typeof bank.pcrRead !== 'function') {
      throw tlError('ERR_INVALID_ARGUMENT', 'a measurement log needs a TPM vault (pcrExtend, pcrRead)')
    }
    this.bank = bank
    this.#entries = checkLog({ from: 0, entries: [...entries] }).entries.map(copyEntry)
  }

  /** Runs `fn` alone among this log's measurements (the attester quotes inside it). @internal */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.#queue.then(fn)
    this.#queue = turn.catch(() => {})
    return turn
  }

  /** How many entries the log holds. */
  get length(): number {
    return this.#entries.length
  }

  /** Copies of the entries from index `from` (0-based) onward. */
  entries(from = 0): EventLogEntry[] {
    if (!Number.isInteger(from) || from < 0) throw tlError('ERR_INVALID_ARGUMENT', `entries: from must be a non-negative integer, not ${String(from)}`)
    return this.#entries.slice(from).map(copyEntry)
  }

  /**
   * Measures `data`: extends SHA-256(data) into SHA-256 PCR `pcr` and appends the entry (with
   * `data` when it is at most MAX_EVENT_DATA bytes, otherwise the digest alone). TPM failures stay
   * ERR_TPM; nothing is appended when the extend fails.
   */
  async measure(pcr: number, type: string, data: Uint8Array | string): Promise<EventLogEntry> {
    if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23) throw tlError('ERR_INVALID_ARGUMENT', `measure: PCR ${String(pcr)} is not an integer in [0, 23]`)
    if (typeof type !== 'string' || type.length === 0 || type.length > 64) throw tlError('ERR_INVALID_ARGUMENT', 'measure: type must be a string of 1 to 64 characters')
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) throw tlError('ERR_INVALID_ARGUMENT', 'measure: data must be bytes or a string')
    const bytes = utf8(data)
    const entry: EventLogEntry = { pcr, digest: sha256(bytes), type }
    if (bytes.length <= MAX_EVENT_DATA) entry.data = bytes
    return this.exclusive(async () => {
      await this.bank.pcrExtend(pcr, entry.digest)
      this.#entries.push(entry)
      return copyEntry(entry)
    })
  }

  /** Measures the events of a boot recipe in order ({@link bootRecipeEvents}). */
  async measureBoot(recipe: BootRecipe): Promise<EventLogEntry[]> {
    const out: EventLogEntry[] = []
    for (const m of bootRecipeEvents(recipe)) out.push(await this.measure(m.pcr, m.type, m.data))
    return out
  }

  /** The PCR values the log predicts, replayed from reset values (only the PCRs it touches). */
  replay(): Map<number, Uint8Array> {
    return replayLog(this.#entries)
  }

  /**
   * A reference-value set (verifier.ts `ReferenceValues`) of the values the log predicts for `pcrs`
   * (reset values for PCRs it does not touch): golden values when this log is the approved boot.
   */
  referenceSet(name: string, pcrs: readonly number[] = DEFAULT_PCR_SELECTION, expires?: number): ReferenceValueSet {
    const replayed = this.replay()
    const values: Record<number, string> = {}
    for (const p of normalizePcrs(pcrs)) values[p] = Buffer.from(replayed.get(p) ?? pcrResetValue(p)).toString('hex')
    return expires === undefined ? { name, pcrs: values } : { name, pcrs: values, expires }
  }

  /**
   * Compares the replayed log with the TPM's PCRs (those the log touches, and `pcrs` besides, which
   * must then hold their reset values). `mismatched` lists the PCRs that differ: after a TPM restart
   * (PCRs reset), an extend outside the log, or a crash between an extend and a save.
   */
  async check(pcrs: readonly number[] = []): Promise<{ ok: boolean; mismatched: number[] }> {
    return this.exclusive(async () => {
      const expected = this.replay()
      const sel = normalizePcrs([...expected.keys(), ...pcrs])
      if (sel.length === 0) return { ok: true, mismatched: [] }
      const actual = await this.bank.pcrRead(sel)
      const mismatched = sel.filter((p) => Buffer.compare(actual.get(p) ?? new Uint8Array(0), expected.get(p) ?? pcrResetValue(p)) !== 0)
      return { ok: mismatched.length === 0, mismatched }
    })
  }

  /** Forgets every entry (the PCRs are not touched): after a TPM restart, before measuring again. */
  clear(): Promise<void> {
    return this.exclusive(async () => {
      this.#entries.length = 0
    })
  }

  /** Writes the log to `path` as JSON, atomically (temp file, fsync, rename). */
  async save(path: string): Promise<void> {
    const body: LogFile = {
      format: 'throughline-measurement-log',
      version: 1,
      entries: this.#entries.map((e) => ({
        pcr: e.pcr,
        type: e.type,
        digest: Buffer.from(e.digest).toString('hex'),
        ...(e.data === undefined ? {} : { data: Buffer.from(e.data).toString('base64') }),
      })),
    }
    await writeFileAtomic(path, JSON.stringify(body, null, 1) + '\n')
  }

  /**
   * Reads a log written by {@link save}, over `bank`. A missing file is ERR_INVALID_ARGUMENT, or an
   * empty log with `missingOk`; a malformed one is ERR_ATTEST_EVIDENCE (also when a `data` does not
   * hash to its digest). Call {@link check} afterwards: the TPM may have restarted since.
   */
  static async load(bank: PcrBank, path: string, options: { missingOk?: boolean } = {}): Promise<MeasurementLog> {
    let size: number
    try {
      size = (await stat(path)).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (options.missingOk === true) return new MeasurementLog(bank)
        throw tlError('ERR_INVALID_ARGUMENT', `no measurement log at ${path}`, { cause: err })
      }
      throw err
    }
    const bad: (what: string, cause?: unknown) => never = (what, cause) => {
      throw tlError('ERR_ATTEST_EVIDENCE', `${path}: ${what}`, cause === undefined ? undefined : { cause })
    }
    if (size > MAX_LOG_FILE) bad(`${size} bytes, over the limit of ${MAX_LOG_FILE}`)
    let parsed: unknown
    try {
      parsed = JSON.parse(await readFile(path, 'utf8'))
    } catch (err) {
      bad('not valid JSON', err)
    }
    const f = parsed as Partial<LogFile> | null
    if (f === null || typeof f !== 'object' || f.format !== 'throughline-measurement-log' || f.version !== 1 || !Array.isArray(f.entries)) {
      bad('not a throughline measurement log of version 1')
    }
    const entries: EventLogEntry[] = []
    for (const [i, e] of (f.entries as unknown[]).entries()) {
      const r = e as Partial<LogFile['entries'][number]> | null
      if (r === null || typeof r !== 'object' || typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) bad(`entry ${i}: digest is not 64 hex digits`)
      if (r.data !== undefined && (typeof r.data !== 'string' || Buffer.from(r.data, 'base64').toString('base64') !== r.data)) bad(`entry ${i}: data is not base64`)
      const entry = { pcr: r.pcr, type: r.type, digest: new Uint8Array(Buffer.from(r.digest, 'hex')) } as EventLogEntry
      if (r.data !== undefined) {
        entry.data = new Uint8Array(Buffer.from(r.data, 'base64'))
        if (Buffer.compare(sha256(entry.data), entry.digest) !== 0) bad(`entry ${i}: data does not hash to its digest`)
      }
      entries.push(entry)
    }
    try {
      return new MeasurementLog(bank, entries)
    } catch (err) {
      if (isThroughlineError(err, 'ERR_ATTEST_EVIDENCE')) bad(err.message.replace(/^ERR_ATTEST_EVIDENCE: /, ''), err)
      throw err
    }
  }
}

/** Options of {@link Tpm2Attester.create}. */
export interface Tpm2AttesterOptions {
  /** The TPM vault holding (or to hold) the attestation key. */
  vault: TpmVault
  /** The vault handle of an attestation key (`ak-…`); created with `vault.generateAttestationKey()` when absent. */
  akHandle?: string
  /** The SHA-256 PCRs to quote. Default DEFAULT_PCR_SELECTION (0, 1, 4, 7, 10). */
  pcrs?: readonly number[]
  /** The measurement log kept beside this TPM (same vault); its entries travel with the evidence. */
  eventLog?: MeasurementLog
}

function aborted(): ThroughlineError {
  return tlError('ERR_ABORTED', 'tpm2 attestation aborted')
}

/** `p`, or ERR_ABORTED as soon as `signal` aborts (the TPM command itself still completes in the vault's queue). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(aborted())
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err instanceof Error ? err : new Error(String(err)))
      },
    )
  })
}

/** The `tpm2` suite attester (see the module note). */
export class Tpm2Attester implements Attester {
  readonly suite = 'tpm2' as const
  /** The evidence format this attester produces. */
  readonly fmt: string = FORMAT.TPM2_QUOTE
  /** The vault handle of the attestation key: persist it to reuse the AK (and its enrolment) across runs. */
  readonly akHandle: string
  /** The quoted PCR selection, ascending. */
  readonly pcrs: readonly number[]
  readonly vault: TpmVault
  readonly eventLog: MeasurementLog | undefined
  readonly #akSpki: Uint8Array
  /** The (obfuscated, per-AK constant offset) resetCount of the previous quote. */
  #lastResetCount: number | undefined

  private constructor(init: { vault: TpmVault; akHandle: string; pcrs: number[]; eventLog: MeasurementLog | undefined; akSpki: Uint8Array }) {
    this.vault = init.vault
    this.akHandle = init.akHandle
    this.pcrs = Object.freeze(init.pcrs)
    this.eventLog = init.eventLog
    this.#akSpki = init.akSpki
  }

  /**
   * An attester over `vault`'s attestation key `akHandle` (a new AK when absent). Throws
   * ERR_INVALID_ARGUMENT for a handle that is not an attestation key, an empty PCR selection, or a
   * log kept over another vault; vault errors (ERR_VAULT_KEY_NOT_FOUND, ERR_TPM) as they are.
   */
  static async create(options: Tpm2AttesterOptions): Promise<Tpm2Attester> {
    const { vault } = options
    if (vault === null || typeof vault !== 'object' || typeof vault.quote !== 'function') throw tlError('ERR_INVALID_ARGUMENT', 'Tpm2Attester needs a TpmVault')
    const pcrs = normalizePcrs(options.pcrs ?? DEFAULT_PCR_SELECTION)
    if (pcrs.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'Tpm2Attester: at least one PCR to quote')
    if (options.eventLog !== undefined && options.eventLog.bank !== vault) throw tlError('ERR_INVALID_ARGUMENT', 'Tpm2Attester: the measurement log must be kept over the same vault')
    const akHandle = options.akHandle ?? (await vault.generateAttestationKey())
    const pub = await vault.tpmPublic(akHandle)
    if (pub.kind !== 'ak') throw tlError('ERR_INVALID_ARGUMENT', `${akHandle} is not an attestation key (a restricted signing key made by generateAttestationKey)`)
    const akSpki = new Uint8Array(eccPublicKeyObject(pub.public).export({ type: 'spki', format: 'der' }))
    return new Tpm2Attester({ vault, akHandle, pcrs, eventLog: options.eventLog, akSpki })
  }

  /** SPKI DER of the AK's public key: what a verifier pins in `trustAnchors.tpmAks`. */
  async akPublicSpki(): Promise<Uint8Array> {
    return Uint8Array.from(this.#akSpki)
  }

  /**
   * Evidence over the context's handle: a quote of {@link pcrs} with qualifyingData = handle, and
   * the log entries from `context.logFrom` — from 0 instead when the log is shorter than that or
   * the TPM was reset since this attester's previous quote (its resetCount changed: a verifier's
   * cursor from before the reset restarts at 0, as the sim attester does). ERR_INVALID_ARGUMENT
   * for a context not minted by a secure channel; ERR_ABORTED when `signal` aborts before or
   * during the quote; every other failure (a context for another suite included) is
   * ERR_ATTEST_PROVER_FAILED with the cause attached.
   */
  async attest(context: AttestationContext, signal?: AbortSignal): Promise<Evidence> {
    assertMinted(context)
    if (context.suite !== 'tpm2') throw tlError('ERR_ATTEST_PROVER_FAILED', `the tpm2 attester cannot attest for suite ${String(context.suite)}`)
    if (signal?.aborted) throw aborted()
    const handle = context.handle
    const log = this.eventLog
    const run = async (): Promise<{ q: Awaited<ReturnType<TpmVault['quote']>>; delta: EventLogDelta | undefined }> => {
      const q = await this.vault.quote(this.akHandle, handle, this.pcrs)
      const resetCount = q.parsed.clockInfo.resetCount
      const reset = this.#lastResetCount !== undefined && this.#lastResetCount !== resetCount
      this.#lastResetCount = resetCount
      if (log === undefined) return { q, delta: undefined }
      const from = !reset && context.logFrom <= log.length ? context.logFrom : 0
      return { q, delta: { from, entries: log.entries(from) } }
    }
    let evidence: Evidence
    try {
      const { q, delta } = await raceAbort(log === undefined ? run() : log.exclusive(run), signal)
      if (Buffer.compare(q.parsed.extraData, handle) !== 0) throw tlError('ERR_TPM_MALFORMED', 'the quote does not carry the handle as extraData')
      if (q.signature.length !== 64) throw tlError('ERR_TPM_MALFORMED', `the quote signature is ${q.signature.length} bytes, not P-256 r ‖ s`)
      const sig = encodeSignature({ sigAlg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256, r: q.signature.subarray(0, 32), s: q.signature.subarray(32) })
      const pcrs: [number, Uint8Array][] = [...q.pcrValues.entries()].sort((a, b) => a[0] - b[0]).map(([i, v]) => [i, Uint8Array.from(v)])
      if (delta !== undefined && delta.entries.length > MAX_LOG_ENTRIES) {
        throw tlError('ERR_INVALID_ARGUMENT', `the log delta holds ${delta.entries.length} entries, over the limit of ${MAX_LOG_ENTRIES} a verifier accepts`)
      }
      evidence = {
        suite: 'tpm2',
        fmt: FORMAT.TPM2_QUOTE,
        handleAlg: HANDLE_ALG,
        body: encodeQuoteBody({ v: 1, attest: q.attest, sig, pcrs, akPub: Uint8Array.from(this.#akSpki) }),
        ...(delta === undefined ? {} : { log: delta }),
      }
      decodeEvidence(encodeEvidence(evidence)) // what a verifier would refuse is a prover failure here
    } catch (err) {
      if (isThroughlineError(err, 'ERR_ABORTED')) throw err
      const why = err instanceof Error ? err.message : String(err)
      throw tlError('ERR_ATTEST_PROVER_FAILED', `tpm2 quote failed: ${why}`, { cause: err })
    }
    if (signal?.aborted) throw aborted()
    return evidence
  }
}
