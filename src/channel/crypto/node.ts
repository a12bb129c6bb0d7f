/**
 * The `node` crypto backend (default on Node): node:crypto for X25519, and for ChaCha20-Poly1305,
 * SHA-256 and HMAC on large inputs. For the small inputs of a handshake, where a native object
 * per call costs more than the work (construction, GC), it uses byte-identical JS:
 * - ChaCha20-Poly1305 under {@link JS_AEAD_BELOW} bytes: @stablelib/chacha20poly1305
 *   (notes/perf.md §1: 3 µs against 5 µs at 64 B);
 * - SHA-256/HMAC/HKDF up to {@link JS_HASH_MAX} bytes: sha256.ts.
 * Which is faster per size was measured with bench/noise.ts and micro-benchmarks.
 *
 * X25519 goes ONLY through JWK (perf.md §2, §10):
 * - a private key is imported as JWK `{kty:'OKP', crv:'X25519', d, x: <dummy>}` (node derives the
 *   public key from `d` and ignores `x`), and the KeyObject is cached per secret-key array (LRU;
 *   `releaseKey()` drops an entry, the engine calls it before wiping an ephemeral key);
 * - a public key is imported as JWK `{kty, crv, x}` (about 10x faster than DER), cached (LRU);
 * - the public key of a secret key is `createPublicKey(privateKeyObject).export({format:'jwk'}).x`.
 *
 * HAZARD (Node 20.20): never call `generateKeyPairSync('x25519')` and never JWK-export a key made
 * by `generateKeyPair*` — it can deadlock. Key generation is random bytes, then the JWK import.
 *
 * @module
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  randomFillSync,
  type KeyObject,
} from 'node:crypto'
import { ChaCha20Poly1305 } from '@stablelib/chacha20poly1305'
import { TAGLEN } from '../constants.ts'
import { defineProvider, hkdfFromHmac } from './provider.ts'
import { hkdf as jsHkdf, hmacSha256 as jsHmacSha256, sha256 as jsSha256 } from './sha256.ts'
import type { CryptoPrimitives, CryptoProvider } from './types.ts'

/** Plaintexts shorter than this many bytes are sealed/opened with @stablelib (faster there). */
export const JS_AEAD_BELOW = 256

/**
 * Spare bytes left before every sealed output, in the same buffer, and announced on it under the
 * registered symbol `throughline.aead.headroom` (session.ts `SEAL_HEADROOM`): a transport session
 * writes its 9-byte header there instead of copying the ciphertext into a new buffer.
 */
const SEAL_HEADROOM = 16
const HEADROOM: unique symbol = Symbol.for('throughline.aead.headroom')

/**
 * Inputs of at most this many bytes are hashed/MACed by the JS SHA-256 of sha256.ts: for these
 * sizes a native Hash/Hmac object costs more (construction and GC) than the hashing itself.
 */
export const JS_HASH_MAX = 128

/** A dummy JWK `x` (43 base64url chars = 32 bytes); node derives the real public key from `d`. */
const DUMMY_X = 'A'.repeat(43)

/** How many KeyObjects each cache keeps (least recently used ones are dropped first). */
const CACHE_SIZE = 256

/**
 * A small LRU map. Not a WeakMap on purpose: a WeakMap with thousands of short-lived keys (one
 * ephemeral per handshake) makes every V8 scavenge walk a growing ephemeron table, which halved
 * the handshake rate within seconds (measured); a bounded Map costs nothing of the kind.
 */
class Lru<K, V> {
  readonly #map = new Map<K, V>()
  readonly #size: number
  readonly #onDrop: ((value: V) => void) | undefined

  /** `onDrop` sees every value that leaves the map (evicted, replaced or deleted). */
  constructor(size: number, onDrop?: (value: V) => void) {
    this.#size = size
    this.#onDrop = onDrop
  }

  get(key: K): V | undefined {
    const value = this.#map.get(key)
    if (value !== undefined) {
      this.#map.delete(key) // refresh: move to the most recent end
      this.#map.set(key, value)
    }
    return value
  }

  set(key: K, value: V): void {
    this.delete(key)
    this.#map.set(key, value)
    if (this.#map.size > this.#size) this.delete(this.#map.keys().next().value!)
  }

  delete(key: K): void {
    const value = this.#map.get(key)
    if (value === undefined) return
    this.#map.delete(key)
    this.#onDrop?.(value)
  }
}

interface CachedPrivateKey {
  /** A private copy of the bytes the KeyObject was made from, to detect an array rewritten in place. */
  bytes: Uint8Array
  key: KeyObject
}

function equal32(a: Uint8Array, b: Uint8Array): boolean {
  let acc = 0
  for (let i = 0; i < 32; i++) acc |= a[i]! ^ b[i]!
  return acc === 0
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')
}

/** Private KeyObjects by secret-key array (identity, then bytes compared in constant time). */
const privateKeys = new Lru<Uint8Array, CachedPrivateKey>(CACHE_SIZE, (entry) => entry.bytes.fill(0))
/** Public KeyObjects by the base64url of the key (public data, so a string key is fine). */
const publicKeys = new Lru<string, KeyObject>(CACHE_SIZE)

function privateKeyObject(secretKey: Uint8Array): KeyObject {
  const hit = privateKeys.get(secretKey)
  if (hit !== undefined && equal32(hit.bytes, secretKey)) return hit.key
  const jwk = { kty: 'OKP', crv: 'X25519', d: b64url(secretKey), x: DUMMY_X }
  const key = createPrivateKey({ key: jwk, format: 'jwk' })
  privateKeys.set(secretKey, { bytes: Uint8Array.from(secretKey), key })
  return key
}

function publicKeyObject(bytes: Uint8Array): KeyObject {
  const x = b64url(bytes)
  let key = publicKeys.get(x)
  if (key === undefined) {
    key = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' })
    publicKeys.set(x, key)
  }
  return key
}

/**
 * Small random requests (an ephemeral key per handshake) are served from a pool refilled by one
 * randomFillSync call, as node's own randomUUID() does: a call into the CSPRNG costs ~3 µs
 * whatever the size. Each chunk is zeroed in the pool when handed out.
 */
const pool = new Uint8Array(2048)
let poolOffset = pool.length
const RANDOM_POOL_MAX_TAKE = 64

function totalLength(parts: readonly Uint8Array[]): number {
  let n = 0
  for (const part of parts) n += part.length
  return n
}

const primitives: CryptoPrimitives = {
  name: 'node',

  x25519PublicKey(secretKey) {
    const jwk = createPublicKey(privateKeyObject(secretKey)).export({ format: 'jwk' })
    return Buffer.from(jwk.x as string, 'base64url')
  },

  x25519(secretKey, publicKey) {
    try {
      return diffieHellman({ privateKey: privateKeyObject(secretKey), publicKey: publicKeyObject(publicKey) })
    } catch (err) {
      // OpenSSL refuses to return the all-zero X25519 output; hand zeros to the policy layer,
      // which rejects them exactly as it does for the portable backend.
      if ((err as { code?: unknown }).code === 'ERR_OSSL_FAILED_DURING_DERIVATION') return new Uint8Array(32)
      /* c8 ignore next 2 */
      throw err
    }
  },

  seal(key, nonce, ad, plaintext) {
    // One buffer: SEAL_HEADROOM spare bytes | ciphertext | tag. The caller gets the view after the
    // spare bytes, marked, so that a transport session can put its header there without copying
    // the ciphertext again (session.ts).
    // (a plain Uint8Array view, not a Buffer: callers rely on slice() making a copy)
    const length = plaintext.length
    const whole = Buffer.allocUnsafe(SEAL_HEADROOM + length + TAGLEN)
    const out: Uint8Array & { [HEADROOM]?: number } = new Uint8Array(whole.buffer, whole.byteOffset + SEAL_HEADROOM, length + TAGLEN)
    if (length < JS_AEAD_BELOW) new ChaCha20Poly1305(key).seal(nonce, plaintext, ad, out)
    else {
      const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAGLEN })
      if (ad.length > 0) cipher.setAAD(ad, { plaintextLength: length })
      const body = cipher.update(plaintext)
      cipher.final()
      out.set(body, 0)
      out.set(cipher.getAuthTag(), length)
    }
    out[HEADROOM] = SEAL_HEADROOM
    return out
  },

  open(key, nonce, ad, ciphertext) {
    const bodyLength = ciphertext.length - TAGLEN
    if (bodyLength < JS_AEAD_BELOW) return new ChaCha20Poly1305(key).open(nonce, ciphertext, ad)
    const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAGLEN })
    if (ad.length > 0) decipher.setAAD(ad, { plaintextLength: bodyLength })
    decipher.setAuthTag(ciphertext.subarray(bodyLength))
    const plaintext = decipher.update(ciphertext.subarray(0, bodyLength))
    try {
      decipher.final()
    } catch {
      plaintext.fill(0)
      return null
    }
    return plaintext
  },

  sha256(parts) {
    if (totalLength(parts) <= JS_HASH_MAX) return jsSha256(parts)
    const h = createHash('sha256')
    for (const part of parts) h.update(part)
    return h.digest()
  },

  hmacSha256(key, parts) {
    if (key.length <= 64 && totalLength(parts) <= JS_HASH_MAX) return jsHmacSha256(key, parts)
    const h = createHmac('sha256', key)
    for (const part of parts) h.update(part)
    return h.digest()
  },

  hkdf(chainingKey, ikm, n) {
    if (ikm.length <= JS_HASH_MAX) return jsHkdf(chainingKey, ikm, n)
    return hkdfFromHmac(primitives.hmacSha256, chainingKey, ikm, n)
  },

  randomBytes(n) {
    if (n > RANDOM_POOL_MAX_TAKE) return randomFillSync(new Uint8Array(n))
    if (poolOffset + n > pool.length) {
      randomFillSync(pool)
      poolOffset = 0
    }
    const out = pool.slice(poolOffset, poolOffset + n)
    pool.fill(0, poolOffset, poolOffset + n) // handed out: no copy stays behind
    poolOffset += n
    return out
  },

  releaseKey(secretKey) {
    privateKeys.delete(secretKey) // wipes the cached copy of the bytes
  },
}

/** The `node` provider: node:crypto behind the shared policy of `defineProvider()`. */
export const nodeCrypto: CryptoProvider = defineProvider(primitives)
