/**
 * Small key helpers of the attestation layer (node:crypto only): key ids, SPKI import and
 * deterministic key creation from seeds (for reproducible sim fixtures).
 *
 * - Key id: lowercase hex of the first 16 bytes of SHA-256(SPKI DER). Used for sim roots
 *   (`issuer` of a sim device certificate) and verifier keys (`kid` of a result token).
 * - Ed25519 from a 32-byte seed: the seed is the RFC 8032 private key, wrapped in its fixed
 *   PKCS#8 prefix.
 * - P-256 from a seed: scalar d = SHA-256(seed ‖ u8 counter), the first with 1 ≤ d < n, imported as
 *   a SEC1 `ECPrivateKey` without the public point (OpenSSL derives it).
 *
 * @module
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { tlError } from '../errors.ts'

/** Key id of a public key: hex of the first 16 bytes of SHA-256(SPKI DER). */
export function spkiKeyId(spki: Uint8Array): string {
  return createHash('sha256').update(spki).digest().subarray(0, 16).toString('hex')
}

/** SPKI DER of a public (or private) key object. */
export function spkiOf(key: KeyObject): Uint8Array {
  const pub = key.type === 'private' ? createPublicKey(key) : key
  return new Uint8Array(pub.export({ format: 'der', type: 'spki' }))
}

/** Public keys imported so far (SPKI DER → KeyObject): verifiers see the same few keys again and again. */
const imported = new Map<string, KeyObject>()
/** At most this many imported keys are kept (the oldest is forgotten first). */
const MAX_IMPORTED = 1024

/**
 * Imports SPKI DER; ERR_ATTEST_EVIDENCE when it is not a public key. Imports are cached (public
 * keys only, bounded): parsing the DER was a third of the time of an appraisal.
 */
export function importSpki(spki: Uint8Array, what = 'public key'): KeyObject {
  const id = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength).toString('base64')
  const hit = imported.get(id)
  if (hit !== undefined) return hit
  let key: KeyObject
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' })
  } catch (err) {
    throw tlError('ERR_ATTEST_EVIDENCE', `${what} is not an SPKI DER public key`, { cause: err })
  }
  if (imported.size >= MAX_IMPORTED) imported.delete(imported.keys().next().value!)
  imported.set(id, key)
  return key
}

/** True when `key` is an ECDSA P-256 key. */
export function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1'
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

/** An Ed25519 private key whose RFC 8032 secret is `seed` (32 bytes). */
export function ed25519FromSeed(seed: Uint8Array): KeyObject {
  if (seed.length !== 32) throw tlError('ERR_INVALID_ARGUMENT', `an Ed25519 seed is 32 bytes, not ${seed.length}`)
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' })
}

const P256_N = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551')
const SEC1_PREFIX = Buffer.from('30310201010420', 'hex')
const SEC1_SUFFIX = Buffer.from('a00a06082a8648ce3d030107', 'hex')

/** An ECDSA P-256 private key derived deterministically from `seed` (any length). */
export function p256FromSeed(seed: Uint8Array): KeyObject {
  for (let counter = 0; counter < 256; counter++) {
    const d = createHash('sha256').update(seed).update(Uint8Array.of(counter)).digest()
    const v = BigInt(`0x${d.toString('hex')}`)
    if (v === 0n || v >= P256_N) continue
    return createPrivateKey({ key: Buffer.concat([SEC1_PREFIX, d, SEC1_SUFFIX]), format: 'der', type: 'sec1' })
  }
  throw tlError('ERR_INVALID_ARGUMENT', 'no P-256 scalar could be derived from the seed')
}

/** Deterministic bytes: SHA-256(seed ‖ label ‖ u32 counter) blocks, truncated to `n`. */
export function seededBytes(seed: Uint8Array, label: string, n: number, counter = 0): Uint8Array {
  const out = new Uint8Array(n)
  let block = 0
  for (let off = 0; off < n; off += 32, block++) {
    const c = Buffer.alloc(8)
    c.writeUInt32BE(counter >>> 0, 0)
    c.writeUInt32BE(block, 4)
    const h = createHash('sha256').update(seed).update(label).update(c).digest()
    out.set(h.subarray(0, Math.min(32, n - off)), off)
  }
  return out
}
