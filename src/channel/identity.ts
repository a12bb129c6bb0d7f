/**
 * Identities and key bindings.
 *
 * An identity is a long-term signing key (Ed25519 in software; ECDSA P-256 when it lives in a
 * TPM). Its identifier is `I` + the first 20 bytes, in hex, of SHA-256(alg byte ‖ public key).
 * The identity does not take part in each handshake: it signs, once, a **key binding** — "this
 * X25519 static key speaks for me until EXPIRES" — that travels in handshake messages 2 and 3.
 * The peer checks the signature, the expiry, and that the bound key is the very static key the
 * Noise handshake authenticated; so a relay that substitutes its own static key is caught.
 *
 * Signed bytes: `"throughline/key-binding/v1" ‖ 0x00 ‖ msgpack([alg, identityKey, staticKey, expires])`.
 *
 * @module
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { writeFileExclusive } from '../atomic-file.ts'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { pack } from 'msgpackr'
import { tlError } from '../errors.ts'

/** Signature algorithms of identity keys. */
export type IdentityAlg = 'ed25519' | 'p256'
const ALG_BYTE: Record<IdentityAlg, number> = { ed25519: 1, p256: 2 }

/** Default lifetime of a key binding (ms): one day; a long-running node re-binds before it ends. */
export const DEFAULT_BINDING_TTL_MS = 24 * 60 * 60 * 1000
const BINDING_LABEL = Buffer.from('throughline/key-binding/v1\0')
const IDENTIFIER_RE = /^I[0-9a-f]{40}$/

/** Something that can sign with an identity key (a software key, or a vault handle). */
export interface IdentitySigner {
  readonly alg: IdentityAlg
  /** Ed25519: 32 bytes. P-256: the 65-byte uncompressed point. */
  readonly publicKey: Uint8Array
  sign(data: Uint8Array): Promise<Uint8Array>
}

/** A signed statement that `staticKey` speaks for the identity `identityKey` until `expires`. */
export interface KeyBinding {
  v: 1
  alg: IdentityAlg
  identityKey: Uint8Array
  staticKey: Uint8Array
  /** Unix time in ms. */
  expires: number
  signature: Uint8Array
}

/** The identifier of an identity public key: `I` + 40 hex digits. */
export function identifierOf(alg: IdentityAlg, publicKey: Uint8Array): string {
  const h = createHash('sha256').update(Uint8Array.of(ALG_BYTE[alg])).update(publicKey).digest()
  return `I${h.subarray(0, 20).toString('hex')}`
}

/** True if `s` has the form of an identifier. */
export function isIdentifier(s: string): boolean {
  return IDENTIFIER_RE.test(s)
}

function bindingBytes(alg: IdentityAlg, identityKey: Uint8Array, staticKey: Uint8Array, expires: number): Buffer {
  return Buffer.concat([BINDING_LABEL, pack([alg, identityKey, staticKey, expires])])
}

function publicKeyObject(alg: IdentityAlg, key: Uint8Array): KeyObject {
  if (alg === 'ed25519') {
    if (key.length !== 32) throw tlError('ERR_IDENTITY_INVALID', 'an Ed25519 public key has 32 bytes')
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(key).toString('base64url') }, format: 'jwk' })
  }
  if (key.length !== 65 || key[0] !== 4) throw tlError('ERR_IDENTITY_INVALID', 'a P-256 public key is a 65-byte uncompressed point')
  const b = Buffer.from(key)
  return createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b.subarray(1, 33).toString('base64url'), y: b.subarray(33).toString('base64url') },
    format: 'jwk',
  })
}

/** Signs a binding of `staticKey` with `signer`. */
export async function createBinding(signer: IdentitySigner, staticKey: Uint8Array, ttlMs = DEFAULT_BINDING_TTL_MS, now = Date.now()): Promise<KeyBinding> {
  const expires = now + ttlMs
  const signature = await signer.sign(bindingBytes(signer.alg, signer.publicKey, staticKey, expires))
  return { v: 1, alg: signer.alg, identityKey: Uint8Array.from(signer.publicKey), staticKey: Uint8Array.from(staticKey), expires, signature }
}

/**
 * Checks a binding received in a handshake: well-formed, signed by its identity key, not expired,
 * and binding exactly `remoteStatic` (the key the handshake authenticated). Returns the
 * identifier. Throws ERR_IDENTITY_INVALID.
 */
export function verifyBinding(value: unknown, remoteStatic: Uint8Array, now = Date.now()): string {
  const b = value as Partial<KeyBinding> | null
  if (b === null || typeof b !== 'object') throw tlError('ERR_IDENTITY_INVALID', 'the key binding is missing')
  if (b.v !== 1 || (b.alg !== 'ed25519' && b.alg !== 'p256')) throw tlError('ERR_IDENTITY_INVALID', 'unknown key binding version or algorithm')
  if (!(b.identityKey instanceof Uint8Array) || !(b.staticKey instanceof Uint8Array) || !(b.signature instanceof Uint8Array) || typeof b.expires !== 'number') {
    throw tlError('ERR_IDENTITY_INVALID', 'the key binding is malformed')
  }
  if (!Buffer.from(b.staticKey).equals(Buffer.from(remoteStatic))) {
    throw tlError('ERR_IDENTITY_INVALID', "the key binding is for another static key than the one the peer proved (man in the middle?)")
  }
  if (b.expires <= now) throw tlError('ERR_IDENTITY_INVALID', `the key binding expired at ${new Date(b.expires).toISOString()}`)
  let ok: boolean
  try {
    const key = publicKeyObject(b.alg, b.identityKey)
    const data = bindingBytes(b.alg, b.identityKey, b.staticKey, b.expires)
    ok = b.alg === 'ed25519' ? nodeVerify(null, data, key, b.signature) : nodeVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, b.signature)
  } catch (err) {
    throw tlError('ERR_IDENTITY_INVALID', `the key binding cannot be checked: ${(err as Error).message}`, { cause: err })
  }
  if (!ok) throw tlError('ERR_IDENTITY_INVALID', 'the key binding signature does not verify')
  return identifierOf(b.alg, b.identityKey)
}

/** A software Ed25519 identity. Its secret never leaves this object except through `export()`. */
export class SoftwareIdentity implements IdentitySigner {
  readonly alg = 'ed25519' as const
  readonly publicKey: Uint8Array
  readonly identifier: string
  readonly #seed: Uint8Array
  readonly #key: KeyObject

  private constructor(seed: Uint8Array) {
    if (seed.length !== 32) throw tlError('ERR_IDENTITY_INVALID', 'an Ed25519 secret key has 32 bytes')
    this.#seed = Uint8Array.from(seed)
    // JWK import with a placeholder x: node derives the public key from d (and never checks x)
    this.#key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: Buffer.from(seed).toString('base64url'), x: 'A'.repeat(43) }, format: 'jwk' })
    this.publicKey = Buffer.from(createPublicKey(this.#key).export({ format: 'jwk' }).x!, 'base64url')
    this.identifier = identifierOf('ed25519', this.publicKey)
  }

  /** A new random identity. */
  static generate(): SoftwareIdentity {
    return new SoftwareIdentity(randomBytes(32))
  }

  /** The identity of a 32-byte secret key (seed). */
  static fromSecretKey(seed: Uint8Array): SoftwareIdentity {
    return new SoftwareIdentity(seed)
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    return nodeSign(null, data, this.#key)
  }

  /** The secret key, for persisting. */
  exportSecretKey(): Uint8Array {
    return Uint8Array.from(this.#seed)
  }
}

/** Where identity files live: `$THROUGHLINE_HOME/identities`, default `~/.throughline/identities`. */
export function defaultHome(): string {
  return process.env['THROUGHLINE_HOME'] ?? join(homedir(), '.throughline')
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

interface IdentityFile {
  version: 1
  name: string
  alg: 'ed25519'
  identifier: string
  publicKey: string
  secretKey: string
}

/** Identity files on disk (JSON, mode 0600, written atomically). */
export class IdentityStore {
  readonly dir: string

  constructor(home = defaultHome()) {
    this.dir = join(home, 'identities')
  }

  #path(name: string): string {
    if (!NAME_RE.test(name)) throw tlError('ERR_IDENTITY_INVALID', `identity name "${name}" must be 1-64 characters of [A-Za-z0-9_.-]`)
    return join(this.dir, `${name}.json`)
  }

  /** Creates and saves a new identity; refuses to overwrite one (ERR_IDENTITY_EXISTS). */
  async create(name: string): Promise<SoftwareIdentity> {
    const path = this.#path(name)
    const id = SoftwareIdentity.generate()
    const body: IdentityFile = {
      version: 1,
      name,
      alg: 'ed25519',
      identifier: id.identifier,
      publicKey: Buffer.from(id.publicKey).toString('base64'),
      secretKey: Buffer.from(id.exportSecretKey()).toString('base64'),
    }
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    try {
      await writeFileExclusive(path, JSON.stringify(body, null, 2) + '\n')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw tlError('ERR_IDENTITY_EXISTS', `identity "${name}" exists already (${path})`)
      throw err
    }
    return id
  }

  /** Loads an identity (ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_INVALID). */
  async load(name: string): Promise<SoftwareIdentity> {
    const path = this.#path(name)
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw tlError('ERR_IDENTITY_NOT_FOUND', `no identity "${name}" (looked for ${path}; create it with: throughline identity create ${name})`)
      }
      throw tlError('ERR_IDENTITY_INVALID', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
    }
    let body: Partial<IdentityFile>
    try {
      body = JSON.parse(text) as Partial<IdentityFile>
    } catch (err) {
      throw tlError('ERR_IDENTITY_INVALID', `${path} is not valid JSON`, { cause: err })
    }
    if (body.version !== 1 || body.alg !== 'ed25519' || typeof body.secretKey !== 'string') {
      throw tlError('ERR_IDENTITY_INVALID', `${path} is not a throughline identity file of version 1`)
    }
    const id = SoftwareIdentity.fromSecretKey(Buffer.from(body.secretKey, 'base64'))
    if (body.identifier !== undefined && body.identifier !== id.identifier) {
      throw tlError('ERR_IDENTITY_INVALID', `${path}: the stored identifier does not match the key`)
    }
    return id
  }
}
