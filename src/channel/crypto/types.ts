/**
 * The crypto provider interface of the Noise engine (suite `25519_ChaChaPoly_SHA256`).
 *
 * Two layers:
 * - {@link CryptoPrimitives}: what a backend supplies — raw, policy-free operations on byte arrays.
 * - {@link CryptoProvider}: what the engine uses — built from primitives by `defineProvider()`
 *   (provider.ts), which owns all crypto policy (lengths, nonce range and encoding, all-zero DH
 *   rejection, tag failures as ERR_DECRYPT), so every backend behaves the same.
 *
 * @module
 */

/** An X25519 key pair, both halves raw 32-byte strings (RFC 7748). */
export interface KeyPair {
  publicKey: Uint8Array
  secretKey: Uint8Array
}

/**
 * The crypto operations the Noise engine needs (Noise rev 34 §4), with policy applied.
 * Obtain one with `getCrypto()`; build a custom one with `defineProvider()`.
 */
export interface CryptoProvider {
  /** Short name of the backend, e.g. `node` or `portable`. */
  readonly name: string
  /** GENERATE_KEYPAIR(): a fresh random X25519 key pair. */
  generateKeyPair(): KeyPair
  /** The X25519 public key of a 32-byte secret key (scalar multiplication by the base point). */
  publicKeyFromSecret?(secretKey: Uint8Array): Uint8Array
  /**
   * DH(key_pair, public_key): X25519, 32 bytes. An all-zero result (a low-order public key)
   * throws ThroughlineError ERR_CRYPTO_DH_ZERO.
   */
  dh(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array
  /**
   * ENCRYPT(k, n, ad, plaintext) of ChaChaPoly: ciphertext followed by the 16-byte tag.
   * `nonce` is the Noise 64-bit counter (0 ≤ nonce ≤ 2^64-1).
   */
  aeadSeal(key: Uint8Array, nonce: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array
  /** DECRYPT(k, n, ad, ciphertext); throws ThroughlineError ERR_DECRYPT when the tag does not verify. */
  aeadOpen(key: Uint8Array, nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array
  /** HASH(): SHA-256 of the concatenation of `parts`. */
  sha256(...parts: Uint8Array[]): Uint8Array
  /** HMAC-SHA256 of the concatenation of `parts` under `key`. */
  hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array
  /** HKDF(chaining_key, input_key_material, num_outputs) of Noise §4.3: 2 or 3 outputs of 32 bytes. */
  hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2): [Uint8Array, Uint8Array]
  hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 3): [Uint8Array, Uint8Array, Uint8Array]
  hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[]
  /** `n` cryptographically secure random bytes. */
  randomBytes(n: number): Uint8Array
  /**
   * Drop whatever the provider cached for this secret key (e.g. an imported key object). The
   * engine calls it before wiping an ephemeral secret key; harmless for unknown keys.
   */
  releaseKey(secretKey: Uint8Array): void
}

/**
 * The raw operations of a backend. No argument checks are expected here: `defineProvider()`
 * validates before calling and interprets the results.
 */
export interface CryptoPrimitives {
  readonly name: string
  /** X25519 of `secretKey` with the base point. */
  x25519PublicKey(secretKey: Uint8Array): Uint8Array
  /** X25519(secretKey, publicKey), raw. May return all zeros for a low-order point (policy checks it). */
  x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array
  /** ChaCha20-Poly1305 (RFC 8439) seal with a 12-byte nonce: ciphertext || tag. */
  seal(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): Uint8Array
  /** ChaCha20-Poly1305 open with a 12-byte nonce; `null` when the tag does not verify. */
  open(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array | null
  sha256(parts: readonly Uint8Array[]): Uint8Array
  hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array
  /** Optional faster Noise HKDF; when absent it is built from `hmacSha256`. */
  hkdf?(chainingKey: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[]
  randomBytes(n: number): Uint8Array
  /** Optional: forget any cached state derived from `secretKey`. */
  releaseKey?(secretKey: Uint8Array): void
}

/** How to choose a provider: a backend name or a ready provider. */
export type CryptoSpec = 'node' | 'portable' | CryptoProvider
