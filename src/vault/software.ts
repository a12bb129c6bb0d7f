/**
 * The software vault: keys in memory, optionally kept in a file encrypted at rest.
 *
 * File format (all integers big-endian):
 * ```
 * "TLVAULT1" | u8 version=1 | u8 kdf (1 scrypt, 2 key file) | u32 scrypt N | u8 r | u8 p
 *            | salt[16] | nonce[12] | ChaCha20-Poly1305(key, nonce, ad = everything before, JSON body)
 * ```
 * The key comes from scrypt(passphrase, salt) or from SHA-256(salt ‖ key file bytes). The file is
 * written atomically: a temp file in the same directory (mode 0600), fsync, rename over the old
 * file, fsync of the directory — a crash at any point leaves the old or the new vault, never a
 * mix. A wrong passphrase, a truncated file or one flipped byte is a typed error, and opening
 * never writes.
 *
 * @module
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createECDH,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  scrypt as scryptCb,
  sign as nodeSign,
  type KeyObject,
} from 'node:crypto'
import { link, open, rename, unlink } from 'node:fs/promises'
import { dirname, basename, join } from 'node:path'
import { tlError } from '../errors.ts'
import type { KeyPair } from '../channel/crypto/types.ts'
import { getCrypto } from '../channel/crypto/index.ts'
import type { IdentityAlg } from '../channel/identity.ts'
import type { Vault } from './types.ts'

const MAGIC = Buffer.from('TLVAULT1')
const VERSION = 1
const KDF_SCRYPT = 1
const KDF_KEYFILE = 2
const HEADER = MAGIC.length + 1 + 1 + 4 + 1 + 1 + 16 + 12
const TAG = 16
/** Largest vault file accepted (checked before reading it whole). */
export const MAX_VAULT_FILE = 16 * 1024 * 1024

/** scrypt cost: N = 2^15, r = 8, p = 1 (≈ 32 MiB, ≈ 0.1 s here). */
export const DEFAULT_SCRYPT = { N: 1 << 15, r: 8, p: 1 } as const

type KeyKind = 'ed25519' | 'p256' | 'x25519'

interface StoredKey {
  kind: KeyKind
  secret: string // base64
  public: string // base64
}

interface Body {
  version: 1
  sealingKey: string
  keys: Record<string, StoredKey>
}

interface LiveKey {
  kind: KeyKind
  secret: Uint8Array
  publicKey: Uint8Array
  keyObject?: KeyObject
}

function scrypt(pass: Uint8Array, salt: Uint8Array, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(pass, salt, 32, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  )
}

/** How the file's key is obtained. */
export type VaultSecret = { passphrase: string | Uint8Array; scrypt?: { N: number; r: number; p: number } } | { keyFile: Uint8Array }

export interface SoftwareVaultFileOptions {
  path: string
  secret: VaultSecret
}

/** The software vault (memory, or an encrypted file). */
export class SoftwareVault implements Vault {
  readonly kind: 'memory' | 'file'
  readonly path: string | undefined
  #keys = new Map<string, LiveKey>()
  #sealingKey: Uint8Array
  #fileKey: Buffer | undefined
  #header: Buffer | undefined
  #closed = false
  #saving: Promise<void> = Promise.resolve()

  protected constructor(kind: 'memory' | 'file', path?: string) {
    this.kind = kind
    this.path = path
    this.#sealingKey = randomBytes(32)
  }

  /** A vault in memory only. */
  static memory(): SoftwareVault {
    return new SoftwareVault('memory')
  }

  /** Creates a new encrypted vault file (ERR_VAULT_EXISTS if the file exists). */
  static async create(options: SoftwareVaultFileOptions): Promise<SoftwareVault> {
    const v = new SoftwareVault('file', options.path)
    await v.#deriveNew(options.secret)
    await v.#save(true)
    return v
  }

  /** Opens an encrypted vault file. Never writes to it. */
  static async open(options: SoftwareVaultFileOptions): Promise<SoftwareVault> {
    const fh = await open(options.path, 'r').catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT'
        ? tlError('ERR_VAULT_NOT_FOUND', `no vault file at ${options.path}`)
        : tlError('ERR_VAULT_CORRUPT', `cannot read ${options.path}: ${err.message}`, { cause: err })
    })
    let bytes: Buffer
    try {
      const { size } = await fh.stat()
      if (size > MAX_VAULT_FILE) throw tlError('ERR_VAULT_CORRUPT', `${options.path} is ${size} bytes (limit ${MAX_VAULT_FILE})`)
      bytes = await fh.readFile()
    } finally {
      await fh.close()
    }
    if (bytes.length < HEADER + TAG || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw tlError('ERR_VAULT_CORRUPT', `${options.path} is not a throughline vault file, or is truncated (${bytes.length} bytes)`)
    }
    const header = bytes.subarray(0, HEADER)
    let o = MAGIC.length
    const version = header[o++]!
    const kdf = header[o++]!
    const N = header.readUInt32BE(o)
    o += 4
    const r = header[o++]!
    const p = header[o++]!
    const salt = header.subarray(o, o + 16)
    o += 16
    const nonce = header.subarray(o, o + 12)
    if (version !== VERSION) throw tlError('ERR_VAULT_CORRUPT', `${options.path}: vault format version ${version} is not supported`)
    const key = await deriveKey(options.secret, kdf, salt, N, r, p)
    let json: Buffer
    try {
      const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG })
      d.setAAD(header, { plaintextLength: bytes.length - HEADER - TAG })
      d.setAuthTag(bytes.subarray(bytes.length - TAG))
      json = Buffer.concat([d.update(bytes.subarray(HEADER, bytes.length - TAG)), d.final()])
    } catch (err) {
      throw tlError('ERR_VAULT_DECRYPT', `${options.path}: wrong passphrase or key file, or the file was altered`, { cause: err })
    }
    let body: Body
    try {
      body = JSON.parse(json.toString('utf8')) as Body
    } catch (err) {
      throw tlError('ERR_VAULT_CORRUPT', `${options.path}: the decrypted body is not valid JSON`, { cause: err })
    }
    const v = new SoftwareVault('file', options.path)
    v.#fileKey = key
    v.#header = Buffer.from(header)
    v.#sealingKey = Buffer.from(body.sealingKey, 'base64')
    for (const [h, k] of Object.entries(body.keys ?? {})) {
      v.#keys.set(h, { kind: k.kind, secret: Buffer.from(k.secret, 'base64'), publicKey: Buffer.from(k.public, 'base64') })
    }
    return v
  }

  async #deriveNew(secret: VaultSecret): Promise<void> {
    const salt = randomBytes(16)
    const { N, r, p } = 'passphrase' in secret ? (secret.scrypt ?? DEFAULT_SCRYPT) : { N: 0, r: 0, p: 0 }
    const kdf = 'passphrase' in secret ? KDF_SCRYPT : KDF_KEYFILE
    this.#fileKey = await deriveKey(secret, kdf, salt, N, r, p)
    const header = Buffer.alloc(HEADER)
    let o = MAGIC.copy(header, 0)
    header[o++] = VERSION
    header[o++] = kdf
    header.writeUInt32BE(N, o)
    o += 4
    header[o++] = r
    header[o++] = p
    salt.copy(header, o)
    this.#header = header
  }

  #check(): void {
    if (this.#closed) throw tlError('ERR_VAULT_CLOSED', 'the vault is closed')
  }

  #get(handle: string, kinds: readonly KeyKind[]): LiveKey {
    this.#check()
    const k = this.#keys.get(handle)
    if (k === undefined) throw tlError('ERR_VAULT_KEY_NOT_FOUND', `no key with handle ${handle}`)
    if (!kinds.includes(k.kind)) throw tlError('ERR_VAULT_KEY_NOT_FOUND', `key ${handle} is a ${k.kind} key, not ${kinds.join(' or ')}`)
    return k
  }

  async #add(kind: KeyKind, secret: Uint8Array, publicKey: Uint8Array): Promise<string> {
    this.#check()
    const handle = `${kind}-${randomBytes(8).toString('hex')}`
    this.#keys.set(handle, { kind, secret, publicKey })
    await this.#persist()
    return handle
  }

  // ---------------------------------------------------------------- signing

  async generateSigningKey(alg: IdentityAlg): Promise<string> {
    if (alg === 'ed25519') {
      const seed = randomBytes(32)
      const ko = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: 'A'.repeat(43) }, format: 'jwk' })
      const pub = Buffer.from(createPublicKey(ko).export({ format: 'jwk' }).x!, 'base64url')
      return this.#add('ed25519', seed, pub)
    }
    if (alg === 'p256') {
      const ecdh = createECDH('prime256v1')
      ecdh.generateKeys()
      return this.#add('p256', ecdh.getPrivateKey(), ecdh.getPublicKey())
    }
    throw tlError('ERR_INVALID_ARGUMENT', `unknown signing algorithm ${String(alg)}`)
  }

  async signingPublicKey(handle: string): Promise<Uint8Array> {
    return Uint8Array.from(this.#get(handle, ['ed25519', 'p256']).publicKey)
  }

  async signingAlgorithm(handle: string): Promise<IdentityAlg> {
    return this.#get(handle, ['ed25519', 'p256']).kind as IdentityAlg
  }

  async sign(handle: string, data: Uint8Array): Promise<Uint8Array> {
    const k = this.#get(handle, ['ed25519', 'p256'])
    if (k.kind === 'ed25519') {
      k.keyObject ??= createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: Buffer.from(k.secret).toString('base64url'), x: 'A'.repeat(43) }, format: 'jwk' })
      return nodeSign(null, data, k.keyObject)
    }
    const pub = Buffer.from(k.publicKey)
    k.keyObject ??= createPrivateKey({
      key: { kty: 'EC', crv: 'P-256', d: Buffer.from(k.secret).toString('base64url'), x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') },
      format: 'jwk',
    })
    return nodeSign('sha256', data, { key: k.keyObject, dsaEncoding: 'ieee-p1363' })
  }

  // ---------------------------------------------------------------- secure channel keys

  async generateX25519(): Promise<string> {
    const kp = getCrypto('node').generateKeyPair()
    return this.#add('x25519', kp.secretKey, kp.publicKey)
  }

  async x25519PublicKey(handle: string): Promise<Uint8Array> {
    return Uint8Array.from(this.#get(handle, ['x25519']).publicKey)
  }

  async x25519KeyPair(handle: string): Promise<KeyPair> {
    const k = this.#get(handle, ['x25519'])
    return { publicKey: Uint8Array.from(k.publicKey), secretKey: Uint8Array.from(k.secret) }
  }

  // ---------------------------------------------------------------- sealing

  /** Seals with the vault's own key (ChaCha20-Poly1305, random nonce). PCR binding needs a TPM. */
  async seal(data: Uint8Array, options: { pcrs?: readonly number[] } = {}): Promise<Uint8Array> {
    this.#check()
    if (options.pcrs !== undefined && options.pcrs.length > 0) throw tlError('ERR_VAULT_UNSUPPORTED', 'a software vault cannot bind a secret to PCRs (use the TPM vault)')
    const nonce = randomBytes(12)
    const c = createCipheriv('chacha20-poly1305', this.#sealingKey, nonce, { authTagLength: TAG })
    const ct = Buffer.concat([c.update(data), c.final(), c.getAuthTag()])
    return Buffer.concat([Buffer.from([1]), nonce, ct])
  }

  async unseal(blob: Uint8Array): Promise<Uint8Array> {
    this.#check()
    const b = Buffer.from(blob)
    if (b.length < 1 + 12 + TAG || b[0] !== 1) throw tlError('ERR_VAULT_CORRUPT', 'not a sealed blob of this vault')
    try {
      const d = createDecipheriv('chacha20-poly1305', this.#sealingKey, b.subarray(1, 13), { authTagLength: TAG })
      d.setAuthTag(b.subarray(b.length - TAG))
      return Buffer.concat([d.update(b.subarray(13, b.length - TAG)), d.final()])
    } catch (err) {
      throw tlError('ERR_VAULT_DECRYPT', 'the sealed blob was altered or sealed by another vault', { cause: err })
    }
  }

  // ---------------------------------------------------------------- management

  async listKeys(): Promise<string[]> {
    this.#check()
    return [...this.#keys.keys()]
  }

  async deleteKey(handle: string): Promise<void> {
    const k = this.#get(handle, ['ed25519', 'p256', 'x25519'])
    k.secret.fill(0)
    this.#keys.delete(handle)
    await this.#persist()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    await this.#saving
    this.#closed = true
    for (const k of this.#keys.values()) k.secret.fill(0)
    this.#keys.clear()
    this.#sealingKey.fill(0)
    this.#fileKey?.fill(0)
  }

  async #persist(): Promise<void> {
    if (this.kind !== 'file') return
    // serialize saves: each waits for the one before
    const next = this.#saving.then(() => this.#save(false))
    this.#saving = next.catch(() => {})
    await next
  }

  /** Writes the vault atomically: temp file (0600), fsync, rename, fsync of the directory. */
  async #save(exclusive: boolean): Promise<void> {
    const path = this.path!
    const body: Body = { version: 1, sealingKey: Buffer.from(this.#sealingKey).toString('base64'), keys: {} }
    for (const [h, k] of this.#keys) body.keys[h] = { kind: k.kind, secret: Buffer.from(k.secret).toString('base64'), public: Buffer.from(k.publicKey).toString('base64') }
    const header = Buffer.from(this.#header!)
    randomBytes(12).copy(header, HEADER - 12) // a fresh nonce for every write
    const plain = Buffer.from(JSON.stringify(body), 'utf8')
    const c = createCipheriv('chacha20-poly1305', this.#fileKey!, header.subarray(HEADER - 12), { authTagLength: TAG })
    c.setAAD(header, { plaintextLength: plain.length })
    const out = Buffer.concat([header, c.update(plain), c.final(), c.getAuthTag()])
    plain.fill(0)
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
    const fh = await open(tmp, 'wx', 0o600)
    try {
      await fh.writeFile(out)
      await fh.sync()
    } finally {
      await fh.close()
    }
    try {
      if (exclusive) {
        // link() fails with EEXIST when a vault is there: never overwrite one on create
        await link(tmp, path).catch((err: NodeJS.ErrnoException) => {
          throw err.code === 'EEXIST' ? tlError('ERR_VAULT_EXISTS', `a vault file exists at ${path}`) : err
        })
        await unlink(tmp)
      } else {
        await this.renameIntoPlace(tmp, path)
      }
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw err
    }
    const dir = await open(dirname(path), 'r')
    try {
      await dir.sync()
    } finally {
      await dir.close()
    }
    this.#header = header
  }

  /** The rename step of a save (a seam for crash tests). */
  protected async renameIntoPlace(tmp: string, path: string): Promise<void> {
    await rename(tmp, path)
  }
}

async function deriveKey(secret: VaultSecret, kdf: number, salt: Uint8Array, N: number, r: number, p: number): Promise<Buffer> {
  if (kdf === KDF_SCRYPT) {
    if (!('passphrase' in secret)) throw tlError('ERR_VAULT_DECRYPT', 'this vault is protected by a passphrase, not a key file')
    if (N < 1024 || N > 1 << 22 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) {
      throw tlError('ERR_VAULT_CORRUPT', `scrypt parameters N=${N} r=${r} p=${p} are out of range`)
    }
    const pass = typeof secret.passphrase === 'string' ? Buffer.from(secret.passphrase, 'utf8') : secret.passphrase
    return scrypt(pass, salt, N, r, p)
  }
  if (kdf === KDF_KEYFILE) {
    if (!('keyFile' in secret)) throw tlError('ERR_VAULT_DECRYPT', 'this vault is protected by a key file, not a passphrase')
    if (secret.keyFile.length < 32) throw tlError('ERR_INVALID_ARGUMENT', 'a vault key file must hold at least 32 bytes')
    return createHash('sha256').update(salt).update(secret.keyFile).digest()
  }
  throw tlError('ERR_VAULT_CORRUPT', `unknown key derivation ${kdf}`)
}
