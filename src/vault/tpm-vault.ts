/**
 * The TPM 2.0 vault: identity keys are non-exportable ECDSA P-256 keys in the TPM; X25519 static
 * keys (TPMs cannot do X25519) are generated in software and kept at rest only as TPM-sealed
 * blobs, optionally bound to PCR values; secrets are sealed under a PCR policy; attestation keys
 * quote PCRs and certify that a key lives in this TPM. It talks to the TPM through the project's
 * own client (`./tpm/`), never through tpm2-tools.
 *
 * State: `DIR/tpm-vault.json` (mode 0600, written atomically: temp file, fsync, rename, fsync of
 * the directory), holding per handle its kind, the TPM2B_PUBLIC and TPM2B_PRIVATE blobs from
 * TPM2_Create (base64) and the public key — never a saved context (those die with a TPM reset).
 * Keys are children of the storage root key (the standard ECC SRK template under the owner
 * hierarchy), which is deterministic: the vault re-creates it at open and re-loads keys from their
 * blobs on demand, also after a TPM restart. The SRK's Name is recorded, so a vault opened against
 * another TPM (or after the owner hierarchy was cleared) fails with ERR_VAULT_WRONG_TPM at once.
 * The blobs are only usable inside the TPM that created them (the private part is encrypted and
 * integrity-protected under the SRK), so the file itself is not encrypted.
 *
 * Commands: every multi-command flow (load, use, flush) runs in one queue, so flows never
 * interleave. Handle hygiene: swtpm has no resource manager and 3 object slots; the vault keeps the
 * SRK loaded and, to make repeated signatures one command, up to `keepLoaded` recently used keys
 * (default: the TPM's TPM_PT_HR_TRANSIENT_MIN minus one), evicting the least recently used one
 * before any load that would not fit, so it never meets TPM_RC_OBJECT_MEMORY. Sealed objects and
 * policy sessions are flushed right after use (in `finally` on failure). A handle the TPM no longer
 * knows (a TPM restart under an open vault) drops the loaded state and runs the flow once more.
 * `close()` flushes everything and sends TPM2_Shutdown(CLEAR) (the client's close).
 *
 * Keys are created with `noDA` by default: their auth values are empty (sealed objects are
 * policy-only), so dictionary-attack protection guards nothing, while an unclean stop after a
 * DA-protected use would count towards lockout (notes/tpm.md §2.7). Pass `noDA: false` to change it.
 *
 * Errors: ERR_VAULT_* as the software vault; TPM failures stay `ERR_TPM` with the response code in
 * `details` (a PCR that changed since sealing: `TPM_RC_POLICY_FAIL`, 0x99D, session 1).
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { tlError, isThroughlineError } from '../errors.ts'
import type { KeyPair } from '../channel/crypto/types.ts'
import { getCrypto } from '../channel/crypto/index.ts'
import type { IdentityAlg } from '../channel/identity.ts'
import type { Vault } from './types.ts'
import {
  EK_CERT_NV,
  TPMA_NV,
  TPM_HT,
  TPM_RC,
  TPM_RH,
  TpmClient,
  TpmReader,
  TpmWriter,
  attestationKeyTemplate,
  eccPublicPoint,
  normalizePcrs,
  objectName,
  parseAttest,
  parsePublic,
  pcrCompositeDigest,
  policyAuth,
  publicArea,
  signatureToP1363,
  signingKeyTemplate,
  srkTemplate,
  type KeyBlobs,
  type TpmAttest,
  type TpmClientOptions,
  type TpmTransport,
} from './tpm/index.ts'

/** The vault's index file inside its directory. */
export const TPM_VAULT_INDEX = 'tpm-vault.json'
/** Largest index file accepted (checked before reading it whole). */
const MAX_INDEX_FILE = 16 * 1024 * 1024
/** TPM_PT_HR_TRANSIENT_MIN: the number of transient objects the TPM holds at least (3 on swtpm). */
const TPM_PT_HR_TRANSIENT_MIN = 0x10e
/** The magic of a sealed blob returned by {@link TpmVault.seal}: "TLS" and format 1. */
const SEAL_MAGIC = Buffer.from('TLS\x01', 'latin1')

type KeyKind = 'p256' | 'ak' | 'x25519'
const HANDLE_RE = /^(p256|ak|x25519)-[0-9a-f]{16}$/

/** A TPM key (signing or attestation) as kept in the index and in memory. */
interface TpmKey {
  kind: 'p256' | 'ak'
  blobs: KeyBlobs
  /** The 65-byte uncompressed point. */
  point: Uint8Array
}

/** An X25519 key: its public key and the sealed object holding its secret. */
interface SealedX25519 {
  kind: 'x25519'
  publicKey: Uint8Array
  sealed: KeyBlobs
  pcrs: number[]
}

type Entry = TpmKey | SealedX25519

interface IndexFile {
  format: 'throughline-tpm-vault'
  version: 1
  /** Hex Name of the SRK the keys were created under. */
  srkName: string
  keys: Record<string, { kind: KeyKind; public: string; private: string; publicKey: string; pcrs?: number[] }>
}

/** Options of {@link TpmVault.open}. */
export interface TpmVaultOptions {
  /** The TPM: `unix:PATH`, `tcp:HOST:PORT`, `/dev/tpmrm0`, or an open transport. */
  endpoint: string | TpmTransport
  /** The vault's directory (created, mode 0700, when missing). */
  dir: string
  /** When false, a directory without an index is ERR_VAULT_NOT_FOUND instead of a new vault. Default true. */
  create?: boolean
  /** Options of the TPM client (timeouts, retries, shutdown on close). */
  client?: TpmClientOptions
  /** Set noDA on keys and sealed objects created by this vault (see the module note). Default true. */
  noDA?: boolean
  /** How many keys to keep loaded between operations, besides the SRK. Default: the TPM's transient slots minus one. */
  keepLoaded?: number
}

/** A TPM2_Quote, with what a verifier needs beside the attestation key. */
export interface TpmQuote {
  /** The raw TPMS_ATTEST bytes: what the signature covers. */
  attest: Uint8Array
  /** ECDSA P-256 over SHA-256(attest), IEEE P1363 `r ‖ s`. */
  signature: Uint8Array
  /** The parsed TPMS_ATTEST (type quote: `quote.pcrSelect`, `quote.pcrDigest`; `extraData` = the qualifying data). */
  parsed: TpmAttest
  /** The SHA-256 PCR values the digest covers (read in the same vault turn; checked against `pcrDigest`). */
  pcrValues: Map<number, Uint8Array>
  /** The attestation key's 65-byte public point. */
  akPublicKey: Uint8Array
}

/** A TPM2_Certify: the attestation key vouches that an object with this Name is loaded in this TPM. */
export interface TpmCertification {
  attest: Uint8Array
  /** ECDSA P-256 over SHA-256(attest), IEEE P1363 `r ‖ s`. */
  signature: Uint8Array
  /** The parsed TPMS_ATTEST (type certify: `certify.name` = the key's Name, `extraData` = the nonce). */
  parsed: TpmAttest
  /** The certified key's TPM2B_PUBLIC: its Name is `objectName(publicArea(keyPublic))`, its attributes say fixedTPM. */
  keyPublic: Uint8Array
  akPublicKey: Uint8Array
}

/** The public side of a TPM key held by the vault. */
export interface TpmPublicInfo {
  kind: 'p256' | 'ak'
  /** The TPM2B_PUBLIC bytes (size prefix included). */
  public: Uint8Array
  /** The object's Name: `u16 nameAlg ‖ SHA-256(TPMT_PUBLIC)`. */
  name: Uint8Array
  /** The 65-byte uncompressed point. */
  point: Uint8Array
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64')
const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return new Uint8Array(h.digest())
}
const STALE_NAMES = new Set(['TPM_RC_HANDLE', 'TPM_RC_INITIALIZE'])

/** A handle the TPM no longer knows (it restarted under the vault), or a TPM that wants Startup. */
function isStaleHandleError(err: unknown): boolean {
  if (!isThroughlineError(err, 'ERR_TPM')) return false
  const name = err.details?.['name']
  return typeof name === 'string' && (STALE_NAMES.has(name) || name.startsWith('TPM_RC_REFERENCE_H'))
}

function corrupt(what: string, cause?: unknown): never {
  throw tlError('ERR_VAULT_CORRUPT', what, cause === undefined ? undefined : { cause })
}

/** Decodes base64 strictly (the round trip must give the same text). */
function fromB64(s: unknown, what: string): Uint8Array {
  if (typeof s !== 'string') corrupt(`${what} is missing`)
  const b = Buffer.from(s, 'base64')
  if (b.toString('base64') !== s) corrupt(`${what} is not base64`)
  return new Uint8Array(b)
}

/** Checks a TPM2B blob: u16 size ‖ exactly that many bytes. */
function isTpm2b(b: Uint8Array): boolean {
  return b.length >= 2 && ((b[0]! << 8) | b[1]!) === b.length - 2
}

/** The TPM 2.0 vault (kind 'tpm'). */
export class TpmVault implements Vault {
  readonly kind = 'tpm' as const
  /** The vault's directory. */
  readonly dir: string
  readonly #client: TpmClient
  readonly #indexPath: string
  readonly #keys: Map<string, Entry>
  readonly #noDA: boolean
  readonly #maxObjects: number
  readonly #keepLoaded: number
  #srkName: Uint8Array
  /** The loaded SRK's handle (undefined: not loaded). */
  #srk: number | undefined
  /** Vault handle → loaded TPM handle, least recently used first. */
  readonly #loaded = new Map<string, number>()
  /** Unsealed X25519 pairs (after the first x25519KeyPair). */
  readonly #pairs = new Map<string, KeyPair>()
  #queue: Promise<unknown> = Promise.resolve()
  #closed = false

  private constructor(init: {
    dir: string
    client: TpmClient
    keys: Map<string, Entry>
    srkName: Uint8Array
    srk: number
    noDA: boolean
    maxObjects: number
    keepLoaded: number
  }) {
    this.dir = init.dir
    this.#client = init.client
    this.#indexPath = join(init.dir, TPM_VAULT_INDEX)
    this.#keys = init.keys
    this.#srkName = init.srkName
    this.#srk = init.srk
    this.#noDA = init.noDA
    this.#maxObjects = init.maxObjects
    this.#keepLoaded = init.keepLoaded
  }

  /**
   * Opens the vault in `dir` (a new one when the directory has no index, unless `create: false`)
   * on the TPM at `endpoint`: re-creates the SRK and checks it is the one the keys were made under.
   */
  static async open(options: TpmVaultOptions): Promise<TpmVault> {
    const dir = options.dir
    const indexPath = join(dir, TPM_VAULT_INDEX)
    const index = await readIndex(indexPath)
    if (index === undefined && options.create === false) throw tlError('ERR_VAULT_NOT_FOUND', `no TPM vault in ${dir} (no ${TPM_VAULT_INDEX})`)
    const keys = index === undefined ? new Map<string, Entry>() : parseIndex(index, indexPath)
    if (index === undefined) await mkdir(dir, { recursive: true, mode: 0o700 })
    const client = await TpmClient.open(options.endpoint, options.client)
    let srk: number | undefined
    try {
      let maxObjects = 3
      try {
        const v = (await client.getProperties(TPM_PT_HR_TRANSIENT_MIN, 1)).get(TPM_PT_HR_TRANSIENT_MIN)
        if (v !== undefined && v >= 2) maxObjects = Math.min(v, 64)
      } catch (err) {
        if (!isThroughlineError(err, 'ERR_TPM')) throw err // a TPM without the property: assume 3
      }
      const primary = await client.createPrimary(srkTemplate())
      srk = primary.handle
      if (index !== undefined && Buffer.from(primary.name).toString('hex') !== index.srkName) {
        throw tlError(
          'ERR_VAULT_WRONG_TPM',
          `the keys in ${indexPath} were created under another storage root key (another TPM, or its owner hierarchy was cleared): SRK Name ${index.srkName}, this TPM's ${Buffer.from(primary.name).toString('hex')}`,
        )
      }
      const keepLoaded = Math.max(0, Math.min(options.keepLoaded ?? maxObjects - 1, maxObjects - 1))
      const vault = new TpmVault({ dir, client, keys, srkName: primary.name, srk, noDA: options.noDA ?? true, maxObjects, keepLoaded })
      if (index === undefined) await vault.#save()
      return vault
    } catch (err) {
      if (srk !== undefined) await client.flushContext(srk).catch(() => {})
      await client.close().catch(() => {})
      throw err
    }
  }

  // ------------------------------------------------------------------------------------------
  // The queue and loaded objects

  #check(): void {
    if (this.#closed) throw tlError('ERR_VAULT_CLOSED', 'the vault is closed')
  }

  /** Runs `fn` alone in the vault's queue; a stale handle (TPM restarted) resets the loaded state and runs it once more. */
  #run<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.#queue.then(async () => {
      this.#check()
      try {
        return await fn()
      } catch (err) {
        if (!isStaleHandleError(err)) throw err
        if (isThroughlineError(err, 'ERR_TPM') && err.details?.['rc'] === TPM_RC.INITIALIZE) await this.#client.startup('clear')
        this.#srk = undefined
        this.#loaded.clear() // gone with the TPM's state: nothing to flush
        return await fn()
      }
    })
    this.#queue = turn.catch(() => {})
    return turn
  }

  async #srkHandle(): Promise<number> {
    if (this.#srk !== undefined) return this.#srk
    const primary = await this.#client.createPrimary(srkTemplate())
    if (Buffer.compare(primary.name, this.#srkName) !== 0) {
      await this.#client.flushContext(primary.handle).catch(() => {})
      throw tlError('ERR_VAULT_WRONG_TPM', 'the TPM under the vault changed: its storage root key is not the one the keys were created under')
    }
    this.#srk = primary.handle
    return primary.handle
  }

  async #evict(handle: string): Promise<void> {
    const h = this.#loaded.get(handle)
    if (h === undefined) return
    this.#loaded.delete(handle)
    await this.#client.flushContext(h)
  }

  /**
   * Loads `objects` (or finds them loaded), runs `fn` with their TPM handles, then keeps the
   * cacheable ones loaded (at most `keepLoaded`, least recently used evicted) and flushes the rest —
   * in `finally` on failure. Evicts before a load that would not fit in the TPM's slots.
   */
  async #withObjects<T>(objects: ReadonlyArray<{ id: string; blobs: KeyBlobs; keep: boolean }>, fn: (handles: number[]) => Promise<T>): Promise<T> {
    const srk = await this.#srkHandle()
    const handles: number[] = []
    const fresh: Array<{ id: string; handle: number; keep: boolean }> = []
    const pinned = new Set<string>()
    let ok = false
    try {
      for (const o of objects) {
        const cached = this.#loaded.get(o.id)
        if (cached !== undefined) {
          this.#loaded.delete(o.id) // re-insert: most recently used
          this.#loaded.set(o.id, cached)
          pinned.add(o.id)
          handles.push(cached)
          continue
        }
        // room for one more: the SRK, the kept keys, this flow's fresh objects, and the new one
        while (1 + this.#loaded.size + fresh.length + 1 > this.#maxObjects) {
          const victim = [...this.#loaded.keys()].find((k) => !pinned.has(k))
          if (victim === undefined) break
          await this.#evict(victim)
        }
        const obj = await this.#client.load(srk, o.blobs)
        fresh.push({ id: o.id, handle: obj.handle, keep: o.keep })
        handles.push(obj.handle)
      }
      const out = await fn(handles)
      ok = true
      return out
    } finally {
      for (const f of fresh) {
        if (ok && f.keep && this.#keepLoaded > 0) {
          this.#loaded.set(f.id, f.handle)
          continue
        }
        if (ok) await this.#client.flushContext(f.handle)
        else await this.#client.flushContext(f.handle).catch(() => {})
      }
      while (this.#loaded.size > this.#keepLoaded) {
        const lru = this.#loaded.keys().next().value as string
        if (ok) await this.#evict(lru)
        else await this.#evict(lru).catch(() => {})
      }
    }
  }

  #entry(handle: string, kinds: readonly KeyKind[]): Entry {
    this.#check()
    const e = this.#keys.get(handle)
    if (e === undefined) throw tlError('ERR_VAULT_KEY_NOT_FOUND', `no key with handle ${handle}`)
    if (!kinds.includes(e.kind)) {
      throw tlError('ERR_VAULT_KEY_NOT_FOUND', `key ${handle} is ${describeKind(e.kind)}, not ${kinds.map(describeKind).join(' or ')}`)
    }
    return e
  }

  #tpmKey(handle: string, kinds: ReadonlyArray<'p256' | 'ak'>): TpmKey {
    return this.#entry(handle, kinds) as TpmKey
  }

  #x25519(handle: string): SealedX25519 {
    return this.#entry(handle, ['x25519']) as SealedX25519
  }

  /** Adds an entry and saves the index; on a failed save the entry is dropped again. */
  async #add(kind: KeyKind, entry: Entry): Promise<string> {
    const handle = `${kind}-${randomBytes(8).toString('hex')}`
    this.#keys.set(handle, entry)
    try {
      await this.#save()
    } catch (err) {
      this.#keys.delete(handle)
      throw err
    }
    return handle
  }

  // ------------------------------------------------------------------------------------------
  // Signing keys

  /** A non-exportable ECDSA P-256 / SHA-256 key in the TPM. Ed25519 is ERR_VAULT_UNSUPPORTED (no TPM does EdDSA). */
  async generateSigningKey(alg: IdentityAlg): Promise<string> {
    if (alg === 'ed25519') throw tlError('ERR_VAULT_UNSUPPORTED', 'a TPM vault holds P-256 signing keys only (TPMs do not implement Ed25519)')
    if (alg !== 'p256') throw tlError('ERR_INVALID_ARGUMENT', `unknown signing algorithm ${String(alg)}`)
    return this.#createKey('p256')
  }

  /**
   * A restricted ECDSA P-256 attestation key under the SRK (owner hierarchy), for {@link quote}
   * and {@link certify}. It signs only TPM-generated structures, never external data.
   */
  async generateAttestationKey(): Promise<string> {
    return this.#createKey('ak')
  }

  #createKey(kind: 'p256' | 'ak'): Promise<string> {
    return this.#run(async () => {
      const template = kind === 'p256' ? signingKeyTemplate({ noDA: this.#noDA }) : attestationKeyTemplate({ noDA: this.#noDA })
      const blobs = await this.#client.create(await this.#srkHandle(), template)
      return this.#add(kind, { kind, blobs, point: eccPublicPoint(blobs.public) })
    })
  }

  async signingPublicKey(handle: string): Promise<Uint8Array> {
    return Uint8Array.from(this.#tpmKey(handle, ['p256']).point)
  }

  async signingAlgorithm(handle: string): Promise<IdentityAlg> {
    this.#tpmKey(handle, ['p256'])
    return 'p256'
  }

  /** TPM2_Sign of SHA-256(`data`), as IEEE P1363 `r ‖ s`. */
  async sign(handle: string, data: Uint8Array): Promise<Uint8Array> {
    const key = this.#tpmKey(handle, ['p256'])
    const digest = sha256(data)
    return this.#run(async () => {
      const sig = await this.#withObjects([{ id: handle, blobs: key.blobs, keep: true }], ([k]) => this.#client.sign(k!, digest))
      return signatureToP1363(sig)
    })
  }

  /** The public side of a TPM key (signing or attestation key): TPM2B_PUBLIC, Name and point. */
  async tpmPublic(handle: string): Promise<TpmPublicInfo> {
    const key = this.#tpmKey(handle, ['p256', 'ak'])
    return { kind: key.kind, public: Uint8Array.from(key.blobs.public), name: objectName(publicArea(key.blobs.public)), point: Uint8Array.from(key.point) }
  }

  // ------------------------------------------------------------------------------------------
  // X25519 static keys

  /** An X25519 key pair generated in software and kept only as a TPM-sealed blob (no PCR policy). */
  async generateX25519(): Promise<string> {
    return this.generateX25519Bound({ pcrs: [] })
  }

  /**
   * An X25519 key pair generated in software, kept only as a TPM-sealed blob whose policy is
   * PolicyPCR over `pcrs` (SHA-256 bank) at their current values: {@link x25519KeyPair} then
   * fails with `ERR_TPM` TPM_RC_POLICY_FAIL once one of them changes.
   */
  async generateX25519Bound(options: { pcrs: readonly number[] }): Promise<string> {
    const pcrs = options.pcrs.length === 0 ? [] : normalizePcrs(options.pcrs)
    return this.#run(async () => {
      const kp = getCrypto('node').generateKeyPair()
      try {
        const sealed = await this.#client.seal(await this.#srkHandle(), kp.secretKey, { pcrs, noDA: this.#noDA })
        return await this.#add('x25519', { kind: 'x25519', publicKey: Uint8Array.from(kp.publicKey), sealed: { public: sealed.public, private: sealed.private }, pcrs })
      } finally {
        kp.secretKey.fill(0)
      }
    })
  }

  async x25519PublicKey(handle: string): Promise<Uint8Array> {
    return Uint8Array.from(this.#x25519(handle).publicKey)
  }

  /**
   * The key pair for the Noise engine: unsealed from the TPM on first use (through the PCR policy
   * when bound), then kept in memory until deleteKey or close. Returns copies.
   */
  async x25519KeyPair(handle: string): Promise<KeyPair> {
    const e = this.#x25519(handle)
    let pair = this.#pairs.get(handle)
    if (pair === undefined) {
      pair = await this.#run(async () => {
        const done = this.#pairs.get(handle)
        if (done !== undefined) return done
        const secret = await this.#unsealObject(e.sealed, e.pcrs)
        const derived = getCrypto('node').publicKeyFromSecret?.(secret)
        if (secret.length !== 32 || (derived !== undefined && Buffer.compare(derived, e.publicKey) !== 0)) {
          secret.fill(0)
          corrupt(`the sealed secret of ${handle} does not match its public key`)
        }
        const p: KeyPair = { publicKey: Uint8Array.from(e.publicKey), secretKey: secret }
        this.#pairs.set(handle, p)
        return p
      })
    }
    return { publicKey: Uint8Array.from(pair.publicKey), secretKey: Uint8Array.from(pair.secretKey) }
  }

  // ------------------------------------------------------------------------------------------
  // Sealing

  /**
   * Seals `data` (at most 128 bytes) in a TPM data object under the SRK. With `pcrs`, its policy
   * is PolicyPCR over those SHA-256 PCRs at their current values (computed offline); without, it
   * unseals with its empty password. The blob: `"TLS" 0x01 ‖ u8 n ‖ n PCR indices ‖ TPM2B_PUBLIC ‖ TPM2B_PRIVATE`.
   */
  async seal(data: Uint8Array, options: { pcrs?: readonly number[] } = {}): Promise<Uint8Array> {
    const pcrs = options.pcrs === undefined || options.pcrs.length === 0 ? [] : normalizePcrs(options.pcrs)
    const sealed = await this.#run(async () => this.#client.seal(await this.#srkHandle(), data, { pcrs, noDA: this.#noDA }))
    const w = new TpmWriter(8 + sealed.public.length + sealed.private.length)
    w.bytes(SEAL_MAGIC).u8(pcrs.length)
    for (const p of pcrs) w.u8(p)
    w.bytes(sealed.public).bytes(sealed.private)
    return w.finish()
  }

  /**
   * Unseals a blob from {@link seal}: ERR_VAULT_CORRUPT when it is not one; `ERR_TPM` when the TPM
   * refuses it — TPM_RC_POLICY_FAIL when a bound PCR changed, TPM_RC_INTEGRITY when it was altered
   * or sealed by another TPM.
   */
  async unseal(blob: Uint8Array): Promise<Uint8Array> {
    this.#check()
    const { pcrs, blobs } = parseSealedBlob(blob)
    return this.#run(() => this.#unsealObject(blobs, pcrs))
  }

  /** Loads a sealed object, unseals it (policy session for PCR-bound ones), flushes both. Inside the queue. */
  async #unsealObject(blobs: KeyBlobs, pcrs: readonly number[]): Promise<Uint8Array> {
    return this.#withObjects([{ id: '#sealed', blobs, keep: false }], async ([item]) => {
      if (pcrs.length === 0) return this.#client.unseal(item!)
      const { handle: session } = await this.#client.startAuthSession('policy')
      let freed = false
      try {
        await this.#client.policyPCR(session, pcrs)
        // continueSession clear: a successful Unseal frees the session (one round trip less)
        const out = await this.#client.unseal(item!, { ...policyAuth(session), attributes: 0 })
        freed = true
        return out
      } finally {
        if (!freed) await this.#client.flushContext(session).catch(() => {})
      }
    })
  }

  // ------------------------------------------------------------------------------------------
  // Attestation

  /**
   * TPM2_Quote of SHA-256 PCRs `pcrs` by the attestation key `akHandle`, with `qualifyingData`
   * (≤ 64 bytes, e.g. a verifier's nonce) as extraData. The PCR values are read in the same turn
   * and checked against the quoted digest (quoted again if a PCR moved in between).
   */
  async quote(akHandle: string, qualifyingData: Uint8Array, pcrs: readonly number[]): Promise<TpmQuote> {
    const ak = this.#tpmKey(akHandle, ['ak'])
    const sel = normalizePcrs(pcrs)
    if (sel.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'quote: at least one PCR')
    return this.#run(() =>
      this.#withObjects([{ id: akHandle, blobs: ak.blobs, keep: true }], async ([a]) => {
        for (let attempt = 0; ; attempt++) {
          const { attest, signature } = await this.#client.quote(a!, qualifyingData, sel)
          const parsed = parseAttest(attest)
          const pcrValues = await this.#client.pcrRead(sel)
          const digest = pcrCompositeDigest(sel.map((p) => pcrValues.get(p)!))
          if (parsed.quote !== undefined && Buffer.compare(digest, parsed.quote.pcrDigest) === 0) {
            return { attest, signature: signatureToP1363(signature), parsed, pcrValues, akPublicKey: Uint8Array.from(ak.point) }
          }
          if (attempt >= 3) throw tlError('ERR_TIMEOUT', 'quote: the PCRs kept changing between the quote and reading their values')
        }
      }),
    )
  }

  /**
   * TPM2_Certify: the attestation key `akHandle` certifies that the key `handle` (a signing key or
   * another attestation key) is loaded in this TPM; `nonce` (≤ 64 bytes) becomes extraData.
   */
  async certify(handle: string, akHandle: string, nonce: Uint8Array): Promise<TpmCertification> {
    const key = this.#tpmKey(handle, ['p256', 'ak'])
    const ak = this.#tpmKey(akHandle, ['ak'])
    return this.#run(() =>
      this.#withObjects(
        [
          { id: handle, blobs: key.blobs, keep: true },
          { id: akHandle, blobs: ak.blobs, keep: true },
        ],
        async ([k, a]) => {
          const { attest, signature } = await this.#client.certify(k!, a!, nonce)
          return {
            attest,
            signature: signatureToP1363(signature),
            parsed: parseAttest(attest),
            keyPublic: Uint8Array.from(key.blobs.public),
            akPublicKey: Uint8Array.from(ak.point),
          }
        },
      ),
    )
  }

  // ------------------------------------------------------------------------------------------
  // Endorsement key and credential activation (AK enrolment, Keylime's method)

  /**
   * The TPM2B_PUBLIC of this TPM's endorsement key: the TCG EK Credential Profile ECC P-256 EK
   * (`ekTemplate()`), created under the endorsement hierarchy (deterministic), read and flushed.
   * Without an EK certificate nothing vouches for it: a verifier that records it trusts it on
   * first use (docs/attestation.md).
   */
  async ekPublic(): Promise<Uint8Array> {
    this.#check()
    return this.#run(async () => {
      await this.#makeRoom(1)
      return this.#client.withEk(async (ek) => Uint8Array.from(ek.public))
    })
  }

  /**
   * The EK certificate stored in NV index 0x01C0000A (TCG: ECC NIST P-256 EK), as raw bytes (DER
   * X.509 on a TPM provisioned by its manufacturer or by `swtpm_setup --create-ek-cert`), or
   * undefined when the index is not defined or not written. The bytes are not checked: a verifier
   * must verify the chain to a manufacturer CA and that the certificate's key is {@link ekPublic}.
   */
  async ekCertificate(nvIndex: number = EK_CERT_NV.ECC_P256): Promise<Uint8Array | undefined> {
    this.#check()
    return this.#run(async () => {
      let pub
      try {
        pub = await this.#client.nvReadPublic(nvIndex)
      } catch (err) {
        if (isThroughlineError(err, 'ERR_TPM') && err.details?.['name'] === 'TPM_RC_HANDLE') return undefined
        throw err
      }
      if ((pub.attributes & TPMA_NV.written) === 0) return undefined
      const ownerRead = (pub.attributes & TPMA_NV.authRead) === 0 && (pub.attributes & TPMA_NV.ownerRead) !== 0
      return this.#client.nvRead(nvIndex, pub.dataSize, ownerRead ? { authHandle: TPM_RH.OWNER } : {})
    })
  }

  /**
   * TPM2_ActivateCredential with the attestation key `akHandle` and this TPM's EK (policy session
   * with PolicySecret(TPM_RH_ENDORSEMENT)): returns the secret of a credential made (e.g. by
   * `makeCredential` in src/attest/credential.ts) for this AK's Name and this EK. Both blobs are
   * TPM2B wire bytes. A credential for another Name or another EK is `ERR_TPM` (TPM_RC_INTEGRITY,
   * or an ECC point/value error). The EK and the session are flushed whatever happens.
   */
  async activateCredential(akHandle: string, credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Promise<Uint8Array> {
    const ak = this.#tpmKey(akHandle, ['ak'])
    if (!(credentialBlob instanceof Uint8Array) || !isTpm2b(credentialBlob)) throw tlError('ERR_INVALID_ARGUMENT', 'activateCredential: the credential blob is not a TPM2B_ID_OBJECT')
    if (!(encryptedSecret instanceof Uint8Array) || !isTpm2b(encryptedSecret)) throw tlError('ERR_INVALID_ARGUMENT', 'activateCredential: the encrypted secret is not a TPM2B_ENCRYPTED_SECRET')
    return this.#run(async () => {
      // The AK (if not loaded yet) and the EK each need a slot next to the SRK.
      await this.#makeRoom(this.#loaded.has(akHandle) ? 1 : 2, akHandle)
      return this.#withObjects([{ id: akHandle, blobs: ak.blobs, keep: true }], ([a]) =>
        this.#client.activateCredentialWithEk(a!, credentialBlob, encryptedSecret),
      )
    })
  }

  /** Evicts kept keys (least recently used first, never `keep`) until `n` more objects fit beside the SRK. */
  async #makeRoom(n: number, keep?: string): Promise<void> {
    await this.#srkHandle()
    while (1 + this.#loaded.size + n > this.#maxObjects) {
      const victim = [...this.#loaded.keys()].find((k) => k !== keep)
      if (victim === undefined) break
      await this.#evict(victim)
    }
  }

  // ------------------------------------------------------------------------------------------
  // PCRs (through the vault's queue: the vault holds the TPM connection)

  /** Reads SHA-256 PCR values. */
  async pcrRead(pcrs: readonly number[]): Promise<Map<number, Uint8Array>> {
    return this.#run(() => this.#client.pcrRead(pcrs))
  }

  /** Extends a PCR (SHA-256 bank) with a 32-byte digest, e.g. SHA-256 of a measurement. */
  async pcrExtend(pcr: number, digest: Uint8Array): Promise<void> {
    return this.#run(() => this.#client.pcrExtend(pcr, digest))
  }

  /**
   * The transient objects and sessions loaded in the TPM right now (diagnostics: the vault keeps
   * its SRK and up to `keepLoaded` keys loaded; sealed objects and sessions never outlive a call).
   */
  async tpmHandles(): Promise<{ objects: number[]; sessions: number[] }> {
    return this.#run(async () => ({ objects: await this.#client.getHandles(TPM_HT.TRANSIENT), sessions: await this.#client.getHandles(TPM_HT.HMAC_SESSION) }))
  }

  // ------------------------------------------------------------------------------------------
  // Management

  async listKeys(): Promise<string[]> {
    this.#check()
    return [...this.#keys.keys()]
  }

  /** Removes a key from the index (and from the TPM's memory and the process's, if loaded). */
  async deleteKey(handle: string): Promise<void> {
    this.#entry(handle, ['p256', 'ak', 'x25519'])
    await this.#run(async () => {
      const e = this.#keys.get(handle)
      if (e === undefined) throw tlError('ERR_VAULT_KEY_NOT_FOUND', `no key with handle ${handle}`)
      this.#keys.delete(handle)
      try {
        await this.#save()
      } catch (err) {
        this.#keys.set(handle, e)
        throw err
      }
      this.#pairs.get(handle)?.secretKey.fill(0)
      this.#pairs.delete(handle)
      await this.#evict(handle).catch(() => {})
    })
  }

  /** Flushes every loaded object, sends TPM2_Shutdown(CLEAR) (the client's close), wipes unsealed keys. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    const last = this.#queue.then(async () => {
      if (this.#closed) return
      this.#closed = true
      try {
        for (const h of this.#loaded.values()) await this.#client.flushContext(h).catch(() => {})
        this.#loaded.clear()
        if (this.#srk !== undefined) await this.#client.flushContext(this.#srk).catch(() => {})
        this.#srk = undefined
      } finally {
        for (const p of this.#pairs.values()) p.secretKey.fill(0)
        this.#pairs.clear()
        await this.#client.close()
      }
    })
    this.#queue = last.catch(() => {})
    await last
  }

  /** Writes the index atomically: temp file (0600), fsync, rename, fsync of the directory. */
  async #save(): Promise<void> {
    const body: IndexFile = { format: 'throughline-tpm-vault', version: 1, srkName: Buffer.from(this.#srkName).toString('hex'), keys: {} }
    for (const [h, e] of this.#keys) {
      body.keys[h] =
        e.kind === 'x25519'
          ? { kind: e.kind, public: b64(e.sealed.public), private: b64(e.sealed.private), publicKey: b64(e.publicKey), pcrs: e.pcrs }
          : { kind: e.kind, public: b64(e.blobs.public), private: b64(e.blobs.private), publicKey: b64(e.point) }
    }
    const tmp = join(this.dir, `.${TPM_VAULT_INDEX}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
    const fh = await open(tmp, 'wx', 0o600)
    try {
      try {
        await fh.writeFile(JSON.stringify(body, null, 2) + '\n')
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rename(tmp, this.#indexPath)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw err
    }
    const d = await open(this.dir, 'r')
    try {
      await d.sync()
    } finally {
      await d.close()
    }
  }
}

function describeKind(kind: KeyKind): string {
  return kind === 'p256' ? 'a P-256 signing key' : kind === 'ak' ? 'an attestation key' : 'an X25519 key'
}

/** Reads the index file, or undefined when there is none. */
async function readIndex(path: string): Promise<IndexFile | undefined> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw tlError('ERR_VAULT_CORRUPT', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
  if (size > MAX_INDEX_FILE) corrupt(`${path} is ${size} bytes (limit ${MAX_INDEX_FILE})`)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw tlError('ERR_VAULT_CORRUPT', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (err) {
    corrupt(`${path} is not valid JSON`, err)
  }
  const b = body as Partial<IndexFile> | null
  if (b === null || typeof b !== 'object' || b.format !== 'throughline-tpm-vault' || b.version !== 1) corrupt(`${path} is not a throughline TPM vault index of version 1`)
  if (typeof b.srkName !== 'string' || !/^[0-9a-f]{4,132}$/.test(b.srkName)) corrupt(`${path}: srkName is missing or malformed`)
  if (b.keys === null || typeof b.keys !== 'object' || Array.isArray(b.keys)) corrupt(`${path}: keys is missing`)
  return b as IndexFile
}

/** Validates every entry of an index into live entries. */
function parseIndex(index: IndexFile, path: string): Map<string, Entry> {
  const keys = new Map<string, Entry>()
  for (const [handle, k] of Object.entries(index.keys)) {
    const what = `${path}: key ${handle}`
    if (!HANDLE_RE.test(handle) || k === null || typeof k !== 'object' || !handle.startsWith(`${String(k.kind)}-`)) corrupt(`${what}: bad handle or kind`)
    const blobs: KeyBlobs = { public: fromB64(k.public, `${what} public blob`), private: fromB64(k.private, `${what} private blob`) }
    if (!isTpm2b(blobs.public) || !isTpm2b(blobs.private)) corrupt(`${what}: the blobs are not TPM2B structures`)
    const publicKey = fromB64(k.publicKey, `${what} public key`)
    let pub
    try {
      pub = parsePublic(blobs.public, true)
    } catch (err) {
      corrupt(`${what}: the public blob does not parse`, err)
    }
    if (k.kind === 'x25519') {
      if (pub.type !== 'keyedhash' || publicKey.length !== 32) corrupt(`${what}: not a sealed X25519 key`)
      const pcrs = k.pcrs ?? []
      if (!Array.isArray(pcrs) || pcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 23)) corrupt(`${what}: bad PCR list`)
      if ((pcrs.length > 0) !== (pub.authPolicy.length > 0)) corrupt(`${what}: the PCR list does not match the object's policy`)
      keys.set(handle, { kind: 'x25519', publicKey, sealed: blobs, pcrs: normalizePcrs(pcrs) })
    } else {
      if (pub.type !== 'ecc') corrupt(`${what}: not an ECC key`)
      const point = eccPublicPoint(pub)
      if (Buffer.compare(point, publicKey) !== 0) corrupt(`${what}: the public key does not match the public blob`)
      keys.set(handle, { kind: k.kind, blobs, point })
    }
  }
  return keys
}

/** Parses a sealed blob of {@link TpmVault.seal} (ERR_VAULT_CORRUPT when it is not one). */
function parseSealedBlob(blob: Uint8Array): { pcrs: number[]; blobs: KeyBlobs } {
  if (!(blob instanceof Uint8Array)) throw tlError('ERR_INVALID_ARGUMENT', 'a sealed blob is a Uint8Array')
  try {
    const r = new TpmReader(blob, 'sealed blob')
    if (Buffer.compare(r.bytes(SEAL_MAGIC.length, 'magic'), SEAL_MAGIC) !== 0) corrupt('not a sealed blob of a TPM vault (bad magic)')
    const n = r.u8('pcrCount')
    const pcrs: number[] = []
    for (let i = 0; i < n; i++) pcrs.push(r.u8('pcr'))
    const pub = r.tpm2bRaw('TPM2B_PUBLIC').slice()
    const priv = r.tpm2bRaw('TPM2B_PRIVATE').slice()
    r.end()
    const p = parsePublic(pub, true)
    if (p.type !== 'keyedhash' || (pcrs.length > 0) !== (p.authPolicy.length > 0)) corrupt('the sealed blob does not hold a sealed data object with its policy')
    return { pcrs: pcrs.length === 0 ? [] : normalizePcrs(pcrs), blobs: { public: pub, private: priv } }
  } catch (err) {
    if (isThroughlineError(err, 'ERR_VAULT_CORRUPT')) throw err
    throw tlError('ERR_VAULT_CORRUPT', `not a sealed blob of a TPM vault: ${(err as Error).message}`, { cause: err })
  }
}

