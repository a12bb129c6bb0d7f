/**
 * Attestation on the command line (used by main.ts): the platforms a node attests with, the
 * relying-party options of listeners and initiators, and the verifier service's commands.
 *
 * ## Files in the home (`--home DIR`, default $THROUGHLINE_HOME or ~/.throughline)
 * ```
 * attest/sim-root.key        sim root private key, PKCS#8 PEM, 0600 (created once; --sim-root FILE overrides)
 * attest/sim-root.pub.pem    its public key, SPKI PEM: what a verifier trusts (--trust-sim-root)
 * attest/sim-platform.json   { "version": 1, "seed": "<64 hex>", "clockEpoch": <ms> }: the same AK and
 *                            PCRs on every run, and a sim TPM clock that keeps counting across runs
 * attest/tpm2.json           { "version": 1, "endpoint", "vault": <dir>, "ak": <vault handle> }: the AK, created once
 * attest/tpm2-ak.pub.pem     the AK public key, SPKI PEM: what a verifier pins (--trust-tpm-ak)
 * attest/tpm2-log.json       the measurement log kept beside the TPM (MeasurementLog.save)
 * attest/tpm2-vault/         the TPM vault holding the AK (unless the node's identity is a TPM
 *                            identity on the same --tpm endpoint: then its vault holds the AK)
 * verifier.key               the verifier service's result-signing key, Ed25519 PKCS#8 PEM, 0600
 * ```
 * A sim root key file FILE.key has its public key beside it as FILE.pub.pem (other names: FILE.pub.pem).
 *
 * ## tpm2 start-up
 * The measurement log is loaded; when it is empty or no longer matches the TPM (the TPM restarted
 * and its PCRs were reset), it is cleared and {@link CLI_BOOT_RECIPE} is measured again — the sim
 * platform's boot, so one reference-value set appraises both suites. When the PCRs still do not
 * match after that (something extended them outside the log), start-up fails: restart the TPM.
 *
 * @module
 */
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { ReferenceValues, Verifier, type AppraisalPolicy, type ReferenceValueSet } from '../attest/verifier.ts'
import { SimAttester, SimPlatform, SimRoot } from '../attest/sim.ts'
import { type BootRecipe, SIM_PLATFORM_BOOT } from '../attest/tpm2.ts'
import { writeFileAtomic, writeFileExclusive } from '../atomic-file.ts'
import type { AttestSuite, AttestationResult, Attester, TrustVector } from '../attest/types.ts'
import type { AppraisalRequest, AttestationOptions, EvidenceAppraiser } from '../channel/attestation.ts'
import { resolveRoute, type ResolvedRoute } from '../channel/resolve.ts'
import type { SecureChannels } from '../channel/secure-channel.ts'
import { type TrustPolicy, trustAny, trustIdentifiers } from '../channel/trust.ts'
import { isThroughlineError, tlError, type ThroughlineError } from '../errors.ts'
import type { Node } from '../router/node.ts'
import type { Route } from '../router/route.ts'
import { RemoteVerifier, verifierRequest, DEFAULT_VERIFIER_TIMEOUT_MS } from '../services/verifier.ts'
import type { TpmVault } from '../vault/tpm-vault.ts'

/** The boot the CLI measures into a TPM: the sim platform's boot, so one reference-value set fits both suites. */
export const CLI_BOOT_RECIPE: Readonly<BootRecipe> = SIM_PLATFORM_BOOT

function usage(message: string): ThroughlineError {
  return tlError('ERR_CLI_USAGE', message)
}

function invalid(message: string, cause?: unknown): ThroughlineError {
  return tlError('ERR_INVALID_ARGUMENT', message, cause === undefined ? undefined : { cause })
}

function why(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/^ERR_[A-Z_]+: /, '')
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** Writes `text` to `path` only if it does not exist; false when it did (another process won). */
async function writeNew(path: string, text: string, mode: number): Promise<boolean> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  try {
    // complete before it appears: a process that loses the race reads a whole file, never a torn one
    await writeFileExclusive(path, text, mode)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  }
}

/** Writes a public file unless it already holds `text`. */
async function writePublic(path: string, text: string): Promise<void> {
  if ((await readIfExists(path)) === text) return
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFileAtomic(path, text, 0o644)
}

function spkiPem(spki: Uint8Array): string {
  return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }) as string
}

/** The directory of the attestation files of a home. */
export function attestDir(home: string): string {
  return join(home, 'attest')
}

// =============================================================================================
// Provers: sim and tpm2 platforms

/** Where the public key of sim root key file `keyPath` is written: `X.key` → `X.pub.pem`, else `keyPath.pub.pem`. */
export function simRootPubPath(keyPath: string): string {
  return keyPath.endsWith('.key') ? `${keyPath.slice(0, -'.key'.length)}.pub.pem` : `${keyPath}.pub.pem`
}

/** Loads the sim root key at `keyPath` (created when missing) and writes its public key beside it. */
export async function loadSimRoot(keyPath: string): Promise<{ root: SimRoot; pubPath: string }> {
  let pem = await readIfExists(keyPath)
  if (pem === undefined) {
    const fresh = SimRoot.generate('sim-root')
    pem = (await writeNew(keyPath, fresh.toPem(), 0o600)) ? fresh.toPem() : await readFile(keyPath, 'utf8')
  }
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (err) {
    throw invalid(`${keyPath}: not a PEM private key (${why(err)})`, err)
  }
  let root: SimRoot
  try {
    root = SimRoot.fromPrivateKey('sim-root', key)
  } catch (err) {
    throw invalid(`${keyPath}: ${why(err)}`, err)
  }
  const pubPath = simRootPubPath(keyPath)
  await writePublic(pubPath, spkiPem(root.publicKeySpki))
  return { root, pubPath }
}

interface SimPlatformFile {
  version: 1
  seed: string
  clockEpoch: number
}

/**
 * The sim platform of a home: the seed (same AK and PCRs on every run) and the clock epoch (the
 * sim TPM clock counts ms since then, so it never goes back across runs of the same AK).
 */
export async function loadSimPlatform(home: string, root: SimRoot): Promise<SimPlatform> {
  const path = join(attestDir(home), 'sim-platform.json')
  let text = await readIfExists(path)
  if (text === undefined) {
    const fresh: SimPlatformFile = { version: 1, seed: randomBytes(32).toString('hex'), clockEpoch: Date.now() }
    const body = JSON.stringify(fresh) + '\n'
    text = (await writeNew(path, body, 0o600)) ? body : await readFile(path, 'utf8')
  }
  let f: Partial<SimPlatformFile>
  try {
    f = JSON.parse(text) as Partial<SimPlatformFile>
  } catch (err) {
    throw invalid(`${path}: not valid JSON`, err)
  }
  if (f === null || typeof f !== 'object' || f.version !== 1 || typeof f.seed !== 'string' || !/^[0-9a-f]{64}$/.test(f.seed) || !Number.isSafeInteger(f.clockEpoch)) {
    throw invalid(`${path}: not a sim platform file ({"version":1,"seed":"<64 hex>","clockEpoch":<ms>})`)
  }
  const epoch = f.clockEpoch as number
  return new SimPlatform({ root, seed: new Uint8Array(Buffer.from(f.seed, 'hex')), clock: () => Math.max(0, Date.now() - epoch) + 1000 })
}

/** An open TPM vault that may hold the AK: the vault of a TPM identity the command loaded. */
export interface TpmVaultInUse {
  vault: TpmVault
  endpoint: string
  dir: string
}

/** The TPM vault for the tpm2 attester: `reuse` when on the same endpoint, else `HOME/attest/tpm2-vault`. */
async function openTpmVault(home: string, endpoint: string, reuse: TpmVaultInUse | undefined): Promise<{ vault: TpmVault; dir: string; close: () => Promise<void> }> {
  if (reuse !== undefined && reuse.endpoint === endpoint) return { vault: reuse.vault, dir: reuse.dir, close: async () => {} }
  const { parseTpmEndpoint } = await import('../vault/tpm/transport.ts')
  try {
    parseTpmEndpoint(endpoint)
  } catch (err) {
    throw usage(`--tpm: ${why(err)}`)
  }
  const { TpmVault } = await import('../vault/tpm-vault.ts')
  const dir = join(attestDir(home), 'tpm2-vault')
  const vault = await TpmVault.open({ endpoint, dir })
  return { vault, dir, close: () => vault.close() }
}

/**
 * The measurement log of a home's TPM: loaded, and re-measured ({@link CLI_BOOT_RECIPE}) when
 * empty or out of step with the TPM. Throws when the PCRs cannot match the log.
 */
async function prepareTpmLog(home: string, vault: TpmVault) {
  const { MeasurementLog } = await import('../attest/tpm2.ts')
  const { DEFAULT_PCR_SELECTION } = await import('../attest/constants.ts')
  const path = join(attestDir(home), 'tpm2-log.json')
  await mkdir(attestDir(home), { recursive: true, mode: 0o700 })
  const log = await MeasurementLog.load(vault, path, { missingOk: true })
  if (log.length > 0 && (await log.check(DEFAULT_PCR_SELECTION)).ok) return log
  await log.clear()
  await log.measureBoot(CLI_BOOT_RECIPE)
  await log.save(path)
  const after = await log.check(DEFAULT_PCR_SELECTION)
  if (!after.ok) {
    throw tlError(
      'ERR_ATTEST_PROVER_FAILED',
      `the TPM's PCRs ${after.mismatched.join(', ')} do not match a fresh measured boot: they were extended outside ${path} (restart the TPM to reset them)`,
    )
  }
  return log
}

interface Tpm2File {
  version: 1
  endpoint: string
  vault: string
  ak: string
}

export interface ProverPlatform {
  attester: Attester
  /** tpm2: the vault and AK handle (for AK enrolment at a verifier service). */
  tpm?: { vault: TpmVault; akHandle: string }
  /** Lines for stdout (`attest sim root FILE`, `attest tpm2 ak FILE`). */
  lines: string[]
  close: () => Promise<void>
}

export interface ProverFlags {
  attest?: string[] | undefined
  simRoot?: string | undefined
  tpm?: string | undefined
}

/** Checks `--attest`, `--sim-root` and `--tpm` (usage errors); returns the suites, deduplicated. */
export function checkProverFlags(f: ProverFlags): ('sim' | 'tpm2')[] {
  const kinds: ('sim' | 'tpm2')[] = []
  for (const a of f.attest ?? []) {
    if (a !== 'sim' && a !== 'tpm2') throw usage(`--attest must be sim or tpm2 (got "${a}")`)
    if (!kinds.includes(a)) kinds.push(a)
  }
  if (kinds.includes('tpm2') && f.tpm === undefined) throw usage('--attest tpm2 needs --tpm unix:PATH|tcp:HOST:PORT|/dev/tpmrm0')
  if (!kinds.includes('tpm2') && f.tpm !== undefined) throw usage('--tpm is for --attest tpm2')
  if (!kinds.includes('sim') && f.simRoot !== undefined) throw usage('--sim-root is for --attest sim')
  return kinds
}

/** The attester of one suite, with its files in `home`. */
export async function openProver(kind: 'sim' | 'tpm2', home: string, f: ProverFlags, reuse?: TpmVaultInUse): Promise<ProverPlatform> {
  if (kind === 'sim') {
    const { root, pubPath } = await loadSimRoot(f.simRoot ?? join(attestDir(home), 'sim-root.key'))
    const platform = await loadSimPlatform(home, root)
    return { attester: new SimAttester(platform), lines: [`attest sim root ${pubPath}`], close: async () => {} }
  }
  const endpoint = f.tpm!
  const opened = await openTpmVault(home, endpoint, reuse)
  try {
    const { Tpm2Attester } = await import('../attest/tpm2.ts')
    const log = await prepareTpmLog(home, opened.vault)
    const filePath = join(attestDir(home), 'tpm2.json')
    const vaultRel = relative(home, opened.dir)
    const vaultText = isAbsolute(vaultRel) || vaultRel.startsWith('..') ? resolve(opened.dir) : vaultRel
    const text = await readIfExists(filePath)
    let known: string | undefined
    if (text !== undefined) {
      try {
        const f = JSON.parse(text) as Partial<Tpm2File>
        if (f?.version === 1 && typeof f.ak === 'string' && f.vault === vaultText) known = f.ak
      } catch {
        known = undefined // a new AK is made and the file rewritten
      }
    }
    let attester
    try {
      attester = await Tpm2Attester.create({ vault: opened.vault, eventLog: log, ...(known === undefined ? {} : { akHandle: known }) })
    } catch (err) {
      if (known === undefined || !isThroughlineError(err, 'ERR_VAULT_KEY_NOT_FOUND')) throw err
      attester = await Tpm2Attester.create({ vault: opened.vault, eventLog: log })
    }
    if (attester.akHandle !== known) {
      const body: Tpm2File = { version: 1, endpoint, vault: vaultText, ak: attester.akHandle }
      await writeFileAtomic(filePath, JSON.stringify(body, null, 1) + '\n')
    }
    const pubPath = join(attestDir(home), 'tpm2-ak.pub.pem')
    await writePublic(pubPath, spkiPem(await attester.akPublicSpki()))
    return { attester, tpm: { vault: opened.vault, akHandle: attester.akHandle }, lines: [`attest tpm2 ak ${pubPath}`], close: opened.close }
  } catch (err) {
    await opened.close().catch(() => {})
    throw err
  }
}

/** The reference-value set of a home's platform (`attest pcrs`). */
export async function platformReferenceSet(kind: 'sim' | 'tpm2', home: string, name: string, f: ProverFlags, reuse?: TpmVaultInUse): Promise<ReferenceValueSet> {
  if (kind === 'sim') {
    const { root } = await loadSimRoot(f.simRoot ?? join(attestDir(home), 'sim-root.key'))
    return (await loadSimPlatform(home, root)).referenceSet(name)
  }
  const opened = await openTpmVault(home, f.tpm!, reuse)
  try {
    return (await prepareTpmLog(home, opened.vault)).referenceSet(name)
  } finally {
    await opened.close()
  }
}

/** The TPM2B_PUBLIC of the EK of the TPM at `f.tpm` (`attest ek`), through the home's attestation vault. */
export async function tpmEkPublic(home: string, f: ProverFlags, reuse?: TpmVaultInUse): Promise<Uint8Array> {
  const opened = await openTpmVault(home, f.tpm!, reuse)
  try {
    return await opened.vault.ekPublic()
  } finally {
    await opened.close()
  }
}

/**
 * Reads an EK public file as `attest ek` writes it: hex text (of TPM2B_PUBLIC bytes or a 65-byte
 * point) or the raw bytes.
 */
export async function readEkFile(path: string): Promise<Uint8Array> {
  let raw: Buffer
  try {
    raw = await readFile(path)
  } catch (err) {
    throw invalid(`EK file ${path}: ${why(err)}`, err)
  }
  const text = raw.toString('latin1').trim()
  if (text.length > 0 && text.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'))
  if (raw.length === 0) throw invalid(`EK file ${path} is empty`)
  return new Uint8Array(raw)
}

/** One enrolled AK as kept in the verifier's home (`verifier-aks.json`). */
export interface StoredAk {
  /** Key id of the AK. */
  kid: string
  /** SPKI DER, base64. */
  spki: string
  /** The EK point it was bound to, hex. */
  ek: string
  /** The identifier of the peer that enrolled it. */
  peer: string
  /** When (ISO 8601). */
  enrolled: string
}

/** The JSON in `path` (undefined when the file does not exist); ERR_INVALID_ARGUMENT names `what` when it is not JSON. */
export async function readJsonIfExists(path: string, what: string): Promise<unknown> {
  const text = await readIfExists(path)
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    throw invalid(`${what} ${path}: not valid JSON`, err)
  }
}

/** Reads `verifier-aks.json` (missing: none). */
export async function readStoredAks(path: string): Promise<StoredAk[]> {
  const parsed = await readJsonIfExists(path, 'enrolled AKs')
  if (parsed === undefined) return []
  if (!Array.isArray(parsed) || !parsed.every((a: Partial<StoredAk>) => a !== null && typeof a === 'object' && typeof a.spki === 'string' && typeof a.kid === 'string')) {
    throw invalid(`enrolled AKs ${path}: not an array of {kid, spki, ek, peer, enrolled}`)
  }
  return parsed as StoredAk[]
}

/** Reads `verifier-eks.json` (missing: none): an array of hex EK points. */
export async function readStoredEks(path: string): Promise<Uint8Array[]> {
  const parsed = await readJsonIfExists(path, 'allowed EKs')
  if (parsed === undefined) return []
  if (!Array.isArray(parsed) || !parsed.every((e) => typeof e === 'string' && /^04[0-9a-f]{128}$/.test(e))) throw invalid(`allowed EKs ${path}: not an array of hex P-256 points`)
  return parsed.map((e: string) => new Uint8Array(Buffer.from(e, 'hex')))
}

// =============================================================================================
// Files a verifier reads

/** Reads an SPKI PEM public key file as SPKI DER. */
export async function readSpkiPem(path: string, what: string): Promise<Uint8Array> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw invalid(`${what} ${path}: ${why(err)}`, err)
  }
  try {
    return new Uint8Array(createPublicKey(text).export({ type: 'spki', format: 'der' }))
  } catch (err) {
    throw invalid(`${what} ${path}: not an SPKI PEM public key (${why(err)})`, err)
  }
}

/** Reads reference-value sets: a JSON array of sets, or one set (the output of `attest pcrs`). */
export async function readReferenceValues(path: string): Promise<ReferenceValueSet[]> {
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw invalid(`reference values ${path}: ${why(err)}`, err)
  }
  const sets = (Array.isArray(parsed) ? parsed : [parsed]) as ReferenceValueSet[]
  try {
    new ReferenceValues(sets) // validates
  } catch (err) {
    throw invalid(`reference values ${path}: ${why(err)}`, err)
  }
  return sets.map((s) => (s.expires === undefined ? { name: s.name, pcrs: s.pcrs } : { name: s.name, pcrs: s.pcrs, expires: s.expires }))
}

/** Loads the Ed25519 key at `path` (PKCS#8 PEM), creating it when missing. */
export async function loadVerifierKey(path: string): Promise<KeyObject> {
  const { VerifierKey } = await import('../attest/token.ts')
  let pem = await readIfExists(path)
  if (pem === undefined) {
    const fresh = VerifierKey.generate().privateKey.export({ type: 'pkcs8', format: 'pem' }) as string
    pem = (await writeNew(path, fresh, 0o600)) ? fresh : await readFile(path, 'utf8')
  }
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch (err) {
    throw invalid(`verifier key ${path}: not a PEM private key (${why(err)})`, err)
  }
  if (key.asymmetricKeyType !== 'ed25519') throw invalid(`verifier key ${path}: an Ed25519 key is needed, not ${String(key.asymmetricKeyType)}`)
  return key
}

// =============================================================================================
// Relying party (appraising the peer)

/** The flags of a local verifier (shared with `verifier start`), as parseArgs options. */
export const LOCAL_VERIFIER_OPTIONS = {
  'trust-sim-root': { type: 'string', multiple: true },
  'trust-tpm-ak': { type: 'string', multiple: true },
  'reference-values': { type: 'string' },
  'trust-sim': { type: 'boolean' },
  'min-svn': { type: 'string' },
} as const

/** The relying-party flags of `node start` and `send`, as parseArgs options. */
export const RELYING_PARTY_OPTIONS = {
  'require-attestation': { type: 'string', multiple: true },
  'attest-mode': { type: 'string' },
  'reattest-interval': { type: 'string' },
  verifier: { type: 'string' },
  'verifier-id': { type: 'string' },
  ...LOCAL_VERIFIER_OPTIONS,
} as const

/** What the relying-party flags ask for, checked. */
export interface RelyingPartyPlan {
  require: AttestSuite[]
  mode?: 'handshake' | 'post-handshake'
  reattestInterval?: number
  /** Background check (and passport issuers) through a verifier service. */
  verifierRoute?: string
  /** Trust policy of the channel to the verifier service. */
  verifierTrust: TrustPolicy
  local?: LocalVerifierPlan
}

export interface LocalVerifierPlan {
  simRoots: string[]
  tpmAks: string[]
  referenceValues?: string
  trustSim: boolean
  minSvn?: number
}

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>

const strings = (v: Values, k: string): string[] => (v[k] as string[] | undefined) ?? []
const text = (v: Values, k: string): string | undefined => v[k] as string | undefined

/** Checks a non-negative (or positive) integer flag. */
export function intFlag(v: string | undefined, flag: string, min: number): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) throw usage(`${flag} must be an integer of at least ${min} (got "${v}")`)
  return n
}

/** Checks the flags of a local verifier (no file is read yet). */
export function checkLocalVerifierFlags(v: Values): LocalVerifierPlan {
  const plan: LocalVerifierPlan = { simRoots: strings(v, 'trust-sim-root'), tpmAks: strings(v, 'trust-tpm-ak'), trustSim: v['trust-sim'] === true }
  const rv = text(v, 'reference-values')
  if (rv !== undefined) plan.referenceValues = rv
  const minSvn = intFlag(text(v, 'min-svn'), '--min-svn', 0)
  if (minSvn !== undefined) plan.minSvn = minSvn
  return plan
}

function hasLocalFlags(v: Values): boolean {
  return strings(v, 'trust-sim-root').length > 0 || strings(v, 'trust-tpm-ak').length > 0 || v['reference-values'] !== undefined || v['trust-sim'] === true || v['min-svn'] !== undefined
}

/**
 * Checks the relying-party flags: usage errors for combinations that make no sense. Returns
 * undefined when nothing is required of the peer. `passportFrom`: node start also reaches the
 * verifier for its passport (so `--verifier-id` may be used without `--verifier`).
 */
export function checkRelyingPartyFlags(v: Values, passportFrom = false): RelyingPartyPlan | undefined {
  const require: AttestSuite[] = []
  for (const s of strings(v, 'require-attestation')) {
    if (s !== 'sim' && s !== 'tpm2' && s !== 'passport') throw usage(`--require-attestation must be sim, tpm2 or passport (got "${s}")`)
    if (!require.includes(s)) require.push(s)
  }
  const route = text(v, 'verifier')
  const id = text(v, 'verifier-id')
  let verifierTrust = trustAny()
  if (id !== undefined) {
    if (route === undefined && !passportFrom) throw usage('--verifier-id is for --verifier ROUTE (or --passport-from ROUTE)')
    try {
      verifierTrust = trustIdentifiers([id])
    } catch (err) {
      throw usage(`--verifier-id: ${why(err)}`)
    }
  }
  const local = hasLocalFlags(v)
  if (require.length === 0) {
    for (const flag of ['attest-mode', 'reattest-interval', 'verifier', 'trust-sim-root', 'trust-tpm-ak', 'reference-values', 'trust-sim', 'min-svn']) {
      const val = v[flag]
      if (val !== undefined && !(Array.isArray(val) && val.length === 0) && val !== false) throw usage(`--${flag} needs --require-attestation SUITE`)
    }
    return undefined
  }
  if (route !== undefined && local) throw usage('--verifier ROUTE (a verifier service) and the local verifier flags (--trust-sim-root, --trust-tpm-ak, --reference-values, --trust-sim, --min-svn) exclude each other')
  const plan: RelyingPartyPlan = { require, verifierTrust }
  const mode = text(v, 'attest-mode')
  if (mode !== undefined) {
    if (mode !== 'handshake' && mode !== 'post-handshake') throw usage(`--attest-mode must be handshake or post-handshake (got "${mode}")`)
    plan.mode = mode
  }
  const every = intFlag(text(v, 'reattest-interval'), '--reattest-interval', 1)
  if (every !== undefined) plan.reattestInterval = every
  if (route !== undefined) {
    plan.verifierRoute = route
    return plan
  }
  if (require.includes('passport')) throw usage('--require-attestation passport needs --verifier ROUTE (the verifier service whose keys sign passports)')
  if (!local) throw usage(`--require-attestation ${require.join(' ')} needs an appraiser: --verifier ROUTE (a verifier service), or a local verifier (--trust-sim-root FILE, --trust-tpm-ak FILE, --reference-values FILE)`)
  plan.local = checkLocalVerifierFlags(v)
  if (require.includes('sim') && plan.local.simRoots.length === 0) throw usage('--require-attestation sim with a local verifier needs --trust-sim-root FILE')
  if (require.includes('tpm2') && plan.local.tpmAks.length === 0) throw usage('--require-attestation tpm2 with a local verifier needs --trust-tpm-ak FILE')
  if (!require.includes('sim') && (plan.local.simRoots.length > 0 || plan.local.trustSim)) throw usage('--trust-sim-root and --trust-sim are for --require-attestation sim')
  if (!require.includes('tpm2') && plan.local.tpmAks.length > 0) throw usage('--trust-tpm-ak is for --require-attestation tpm2')
  return plan
}

/** A Verifier from the local verifier flags (reads the files). */
export async function localVerifier(plan: LocalVerifierPlan, id: string, resultTtlMs?: number): Promise<Verifier> {
  const simRoots = await Promise.all(plan.simRoots.map((f) => readSpkiPem(f, 'sim root')))
  const tpmAks = await Promise.all(plan.tpmAks.map((f) => readSpkiPem(f, 'TPM attestation key')))
  const sets = plan.referenceValues === undefined ? [] : await readReferenceValues(plan.referenceValues)
  const policy: AppraisalPolicy = { id: 'throughline-cli-v1' }
  if (plan.trustSim) policy.trustSim = true
  if (plan.minSvn !== undefined) policy.minSvn = plan.minSvn
  return new Verifier({ id, trustAnchors: { simRoots, tpmAks }, referenceValues: new ReferenceValues(sets), policy, ...(resultTtlMs === undefined ? {} : { resultTtlMs }) })
}

/**
 * A verifier service reached by route text through `channels`: the route is resolved again
 * whenever a channel on it has closed (the verifier restarted, say).
 */
export class VerifierLink {
  readonly #channels: SecureChannels
  readonly #text: string
  readonly #trust: TrustPolicy
  readonly timeout: number
  #resolved: ResolvedRoute | undefined
  #pending: Promise<ResolvedRoute> | undefined

  constructor(channels: SecureChannels, text: string, trust: TrustPolicy, timeout = DEFAULT_VERIFIER_TIMEOUT_MS) {
    this.#channels = channels
    this.#text = text
    this.#trust = trust
    this.timeout = timeout
  }

  get node(): Node {
    return this.#channels.node
  }

  async route(): Promise<Route> {
    const r = this.#resolved
    if (r !== undefined && r.channels.every((c) => c.state === 'open')) return r.route
    this.#pending ??= resolveRoute(this.#text, this.#channels, { trust: this.#trust, handshakeTimeout: this.timeout })
      .then((res) => (this.#resolved = res))
      .finally(() => {
        this.#pending = undefined
      })
    return (await this.#pending).route
  }

  /** The verifier's result-signing keys (`keys` op), kid → Ed25519 public key. */
  async keys(): Promise<Map<string, KeyObject>> {
    let route: Route
    try {
      route = await this.route()
    } catch (err) {
      // a verifier that is not the pinned one stays a trust failure; anything else: unreachable
      const code = isThroughlineError(err, 'ERR_TRUST_POLICY') ? 'ERR_TRUST_POLICY' : 'ERR_VERIFIER_UNAVAILABLE'
      throw tlError(code, `${code === 'ERR_TRUST_POLICY' ? 'the verifier service' : 'cannot reach the verifier service'} at ${this.#text}: ${why(err)}`, { cause: err })
    }
    const r = await verifierRequest(this.node, route, { op: 'keys' }, this.timeout)
    const out = new Map<string, KeyObject>()
    for (const k of Array.isArray(r['keys']) ? (r['keys'] as { kid?: unknown; spki?: unknown }[]) : []) {
      if (typeof k?.kid !== 'string' || !(k.spki instanceof Uint8Array)) continue
      try {
        out.set(k.kid, createPublicKey({ key: Buffer.from(k.spki), format: 'der', type: 'spki' }))
      } catch {
        // a key this node cannot read is not trusted
      }
    }
    if (out.size === 0) throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the verifier service at ${this.#text} sent no result-signing key`)
    return out
  }

  /** A background-check appraiser over this link, trusting `keys`. */
  appraiser(keys: Map<string, KeyObject>): EvidenceAppraiser {
    return {
      appraise: (req: AppraisalRequest, signal?: AbortSignal): Promise<AttestationResult> =>
        new RemoteVerifier(this.node, { route: () => this.route(), keys, timeout: this.timeout }).appraise(req, signal),
    }
  }
}

/** The relying-party part of AttestationOptions from a checked plan (reads files, fetches verifier keys). */
export async function relyingPartyOptions(plan: RelyingPartyPlan, channels: SecureChannels, options: { timeout?: number } = {}): Promise<AttestationOptions> {
  const out: AttestationOptions = { require: plan.require }
  if (plan.mode !== undefined) out.mode = plan.mode
  if (plan.reattestInterval !== undefined) out.reattestInterval = plan.reattestInterval
  if (options.timeout !== undefined) out.timeout = options.timeout
  if (plan.verifierRoute !== undefined) {
    const link = new VerifierLink(channels, plan.verifierRoute, plan.verifierTrust, options.timeout)
    const keys = await link.keys()
    out.verifier = link.appraiser(keys)
    out.passportIssuers = keys
  } else if (plan.local !== undefined) {
    out.verifier = await localVerifier(plan.local, 'local')
  }
  return out
}

// =============================================================================================
// Output

const CLAIMS: [keyof TrustVector, string][] = [
  ['instanceIdentity', 'instance-identity'],
  ['configuration', 'configuration'],
  ['executables', 'executables'],
  ['fileSystem', 'file-system'],
  ['hardware', 'hardware'],
  ['runtimeOpaque', 'runtime-opaque'],
  ['storageOpaque', 'storage-opaque'],
  ['sourcedData', 'sourced-data'],
]

/** `attestation <peer>: status=… suite=… verifier=… expires=<ISO> trust-vector=instance-identity:2,…` */
export function attestationLine(peer: string, r: AttestationResult): string {
  const tv = CLAIMS.map(([k, name]) => `${name}:${r.trustVector[k]}`).join(',')
  return `attestation ${peer}: status=${r.status} suite=${r.suite} verifier=${r.verifierId} expires=${new Date(r.exp).toISOString()} trust-vector=${tv}`
}
