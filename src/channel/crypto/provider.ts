/**
 * The one place that owns crypto policy: builds a {@link CryptoProvider} from a backend's raw
 * {@link CryptoPrimitives}. Backends stay pure; every check lives here so all backends behave
 * identically:
 * - key, public key, secret key and tag lengths;
 * - the Noise nonce: 0 ≤ n ≤ 2^64-1, encoded as 4 zero bytes then the little-endian u64 (§12.4);
 * - all-zero X25519 outputs rejected with ERR_CRYPTO_DH_ZERO (RFC 7748 §6.1);
 * - tag failures reported as ERR_DECRYPT;
 * - Noise HKDF (§4.3) built from HMAC when the backend has no faster one.
 *
 * No `node:` imports here: this file is shared by the browser-capable portable backend.
 *
 * @module
 */
import { ThroughlineError } from '../../errors.ts'
import { AEAD_NONCE_LENGTH, DHLEN, HASHLEN, KEYLEN, NOISE_MAX_NONCE, TAGLEN } from '../constants.ts'
import type { CryptoPrimitives, CryptoProvider, KeyPair } from './types.ts'

const BYTE_1 = new Uint8Array([1])
const BYTE_2 = new Uint8Array([2])
const BYTE_3 = new Uint8Array([3])

function checkLength(what: string, bytes: Uint8Array, length: number): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new ThroughlineError('ERR_INVALID_ARGUMENT', `${what} must be a Uint8Array of ${length} bytes`)
  }
}

function checkBytes(what: string, bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array)) {
    throw new ThroughlineError('ERR_INVALID_ARGUMENT', `${what} must be a Uint8Array`)
  }
}

/**
 * The 12-byte ChaChaPoly nonce of Noise §12.4 for a 64-bit counter: 32 bits of zeros followed by
 * the little-endian encoding of `n`. Throws ERR_INVALID_ARGUMENT outside 0..2^64-1.
 */
export function encodeNonce(n: bigint): Uint8Array {
  if (typeof n !== 'bigint' || n < 0n || n > NOISE_MAX_NONCE) {
    throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'an AEAD nonce must be a bigint in 0..2^64-1')
  }
  const out = new Uint8Array(AEAD_NONCE_LENGTH)
  const lo = Number(n & 0xffffffffn)
  const hi = Number(n >> 32n)
  out[4] = lo & 0xff
  out[5] = (lo >>> 8) & 0xff
  out[6] = (lo >>> 16) & 0xff
  out[7] = lo >>> 24
  out[8] = hi & 0xff
  out[9] = (hi >>> 8) & 0xff
  out[10] = (hi >>> 16) & 0xff
  out[11] = hi >>> 24
  return out
}

/** True when every byte is zero; runs over the whole array (no early exit). */
export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]!
  return acc === 0
}

/** Noise HKDF (§4.3) from an HMAC-SHA256 function: RFC 5869 with salt = ck, info = empty. */
export function hkdfFromHmac(
  hmac: (key: Uint8Array, parts: readonly Uint8Array[]) => Uint8Array,
  chainingKey: Uint8Array,
  ikm: Uint8Array,
  n: 2 | 3,
): Uint8Array[] {
  const tempKey = hmac(chainingKey, [ikm])
  const out1 = hmac(tempKey, [BYTE_1])
  const out2 = hmac(tempKey, [out1, BYTE_2])
  const outputs = n === 2 ? [out1, out2] : [out1, out2, hmac(tempKey, [out2, BYTE_3])]
  tempKey.fill(0)
  return outputs
}

/**
 * Wrap a backend's primitives into a {@link CryptoProvider} that applies the crypto policy.
 * Use it to plug in another backend (WebCrypto, a vault…) with the same behaviour.
 */
export function defineProvider(p: CryptoPrimitives): CryptoProvider {
  function publicKeyFromSecret(secretKey: Uint8Array): Uint8Array {
    checkLength('an X25519 secret key', secretKey, DHLEN)
    return p.x25519PublicKey(secretKey)
  }
  function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2): [Uint8Array, Uint8Array]
  function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 3): [Uint8Array, Uint8Array, Uint8Array]
  function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[]
  function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[] {
    checkLength('an HKDF chaining key', chainingKey, HASHLEN)
    checkBytes('HKDF input key material', ikm)
    if (n !== 2 && n !== 3) throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'HKDF gives 2 or 3 outputs')
    return p.hkdf ? p.hkdf(chainingKey, ikm, n) : hkdfFromHmac(p.hmacSha256, chainingKey, ikm, n)
  }
  return {
    name: p.name,
    generateKeyPair(): KeyPair {
      const secretKey = p.randomBytes(DHLEN)
      return { publicKey: p.x25519PublicKey(secretKey), secretKey }
    },
    publicKeyFromSecret,
    dh(secretKey, publicKey) {
      checkLength('an X25519 secret key', secretKey, DHLEN)
      checkLength('an X25519 public key', publicKey, DHLEN)
      const shared = p.x25519(secretKey, publicKey)
      if (isAllZero(shared)) {
        throw new ThroughlineError('ERR_CRYPTO_DH_ZERO', 'X25519 gave the all-zero output (low-order public key)')
      }
      return shared
    },
    aeadSeal(key, nonce, ad, plaintext) {
      checkLength('a ChaChaPoly key', key, KEYLEN)
      checkBytes('associated data', ad)
      checkBytes('a plaintext', plaintext)
      return p.seal(key, encodeNonce(nonce), ad, plaintext)
    },
    aeadOpen(key, nonce, ad, ciphertext) {
      checkLength('a ChaChaPoly key', key, KEYLEN)
      checkBytes('associated data', ad)
      checkBytes('a ciphertext', ciphertext)
      const nonceBytes = encodeNonce(nonce)
      if (ciphertext.length < TAGLEN) {
        throw new ThroughlineError('ERR_DECRYPT', `a ciphertext is shorter than the ${TAGLEN}-byte tag`)
      }
      const plaintext = p.open(key, nonceBytes, ad, ciphertext)
      if (plaintext === null) throw new ThroughlineError('ERR_DECRYPT', 'authentication tag does not verify')
      return plaintext
    },
    sha256(...parts) {
      return p.sha256(parts)
    },
    hmacSha256(key, ...parts) {
      checkBytes('an HMAC key', key)
      return p.hmacSha256(key, parts)
    },
    hkdf,
    randomBytes(n) {
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'randomBytes wants a non-negative integer')
      }
      return p.randomBytes(n)
    },
    releaseKey(secretKey) {
      if (secretKey instanceof Uint8Array) p.releaseKey?.(secretKey)
    },
  }
}
