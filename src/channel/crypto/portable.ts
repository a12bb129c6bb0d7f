/**
 * The `portable` crypto backend: pure JavaScript, for browsers and small runtimes (no `node:`
 * imports in this file). @stablelib/x25519, @stablelib/chacha20poly1305, @noble/hashes SHA-256 and
 * HMAC, and randomness from `globalThis.crypto.getRandomValues`.
 *
 * About 10-20x slower than the `node` backend for handshakes (X25519 dominates, notes/perf.md §2),
 * byte-identical in every output.
 *
 * @module
 */
import { ChaCha20Poly1305 } from '@stablelib/chacha20poly1305'
import { scalarMult, scalarMultBase } from '@stablelib/x25519'
import { hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { defineProvider } from './provider.ts'
import type { CryptoPrimitives, CryptoProvider } from './types.ts'

/** getRandomValues fills at most 65536 bytes per call. */
const RANDOM_CHUNK = 65536

const primitives: CryptoPrimitives = {
  name: 'portable',

  x25519PublicKey(secretKey) {
    return scalarMultBase(secretKey)
  },

  x25519(secretKey, publicKey) {
    // The raw product; the policy layer rejects the all-zero output (stablelib's own
    // `sharedKey(..., rejectZero)` would throw a plain Error instead of our coded one).
    return scalarMult(secretKey, publicKey)
  },

  seal(key, nonce, ad, plaintext) {
    const aead = new ChaCha20Poly1305(key)
    const out = aead.seal(nonce, plaintext, ad)
    aead.clean()
    return out
  },

  open(key, nonce, ad, ciphertext) {
    const aead = new ChaCha20Poly1305(key)
    const out = aead.open(nonce, ciphertext, ad)
    aead.clean()
    return out
  },

  sha256(parts) {
    const h = sha256.create()
    for (const part of parts) h.update(part)
    return h.digest()
  },

  hmacSha256(key, parts) {
    const h = hmac.create(sha256, key)
    for (const part of parts) h.update(part)
    return h.digest()
  },

  randomBytes(n) {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i += RANDOM_CHUNK) {
      globalThis.crypto.getRandomValues(out.subarray(i, Math.min(n, i + RANDOM_CHUNK)))
    }
    return out
  },
}

/** The `portable` provider: pure-JS primitives behind the shared policy of `defineProvider()`. */
export const portableCrypto: CryptoProvider = defineProvider(primitives)
