/**
 * The transport CipherState of Noise (rev 34 §5.1), as returned by a handshake's `split()`.
 *
 * Two ways to use it:
 * - the spec's implicit counter: {@link CipherState.encrypt} / {@link CipherState.decrypt};
 * - explicit nonces for messages that may be lost or reordered across hops (DESIGN §5):
 *   {@link CipherState.encryptWithNonce} / {@link CipherState.decryptWithNonce}, with a replay
 *   window kept by the caller (replay-window.ts), committed only after a successful decrypt.
 *
 * A failed decrypt changes nothing (the counter does not advance). The nonce 2^64-1 is reserved
 * (§5.1) and refused with ERR_NONCE_EXHAUSTED.
 *
 * @module
 */
import { ThroughlineError } from '../errors.ts'
import { KEYLEN, NOISE_MAX_MESSAGE, NOISE_MAX_NONCE, TAGLEN } from './constants.ts'
import type { CryptoProvider } from './crypto/types.ts'

const EMPTY = new Uint8Array(0)
const REKEY_ZEROS = new Uint8Array(KEYLEN)

/** A CipherState with a key: ENCRYPT/DECRYPT with the Noise counter nonce, and REKEY. */
export class CipherState {
  readonly #crypto: CryptoProvider
  #k: Uint8Array | undefined
  #n: bigint
  #maxMessage = NOISE_MAX_MESSAGE

  /**
   * InitializeKey(key) and SetNonce(nonce). The key is copied; wipe yours if you like.
   * Throws ERR_INVALID_ARGUMENT unless `key` has 32 bytes.
   */
  constructor(crypto: CryptoProvider, key: Uint8Array, nonce: bigint = 0n) {
    if (!(key instanceof Uint8Array) || key.length !== KEYLEN) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', `a CipherState key must have ${KEYLEN} bytes`)
    }
    this.#crypto = crypto
    this.#k = Uint8Array.from(key)
    this.#n = 0n
    this.setNonce(nonce)
  }

  /**
   * Raises the message size limit above Noise's 65535 bytes. Only for transports that frame
   * messages themselves (the secure channel's explicit-nonce messages are bounded by the
   * router's frame limit instead); handshake messages keep the Noise limit.
   */
  setMaxMessageLength(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < TAGLEN) throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'a message size limit must be an integer of at least 16')
    this.#maxMessage = bytes
  }

  /** HasKey(): true until {@link CipherState.destroy}. */
  hasKey(): boolean {
    return this.#k !== undefined
  }

  /** The implicit counter: the nonce the next {@link CipherState.encrypt}/decrypt will use. */
  get nonce(): bigint {
    return this.#n
  }

  /** SetNonce(nonce): set the implicit counter (0..2^64-1). */
  setNonce(nonce: bigint): void {
    if (typeof nonce !== 'bigint' || nonce < 0n || nonce > NOISE_MAX_NONCE) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'a nonce must be a bigint in 0..2^64-1')
    }
    this.#n = nonce
  }

  /** EncryptWithAd(ad, plaintext) with the implicit counter, which then advances. */
  encrypt(plaintext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    const out = this.encryptWithNonce(this.#n, plaintext, ad)
    this.#n++
    return out
  }

  /**
   * DecryptWithAd(ad, ciphertext) with the implicit counter. On success the counter advances;
   * on failure (ERR_DECRYPT) nothing changes.
   */
  decrypt(ciphertext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    const out = this.decryptWithNonce(this.#n, ciphertext, ad)
    this.#n++
    return out
  }

  /** ENCRYPT(k, nonce, ad, plaintext) with an explicit nonce; the implicit counter is untouched. */
  encryptWithNonce(nonce: bigint, plaintext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    const k = this.#key(nonce)
    if (plaintext.length > this.#maxMessage - TAGLEN) {
      throw new ThroughlineError(
        'ERR_NOISE_MESSAGE_TOO_LARGE',
        `a plaintext of ${plaintext.length} bytes makes a ciphertext over ${this.#maxMessage} bytes`,
      )
    }
    return this.#crypto.aeadSeal(k, nonce, ad, plaintext)
  }

  /** DECRYPT(k, nonce, ad, ciphertext) with an explicit nonce; throws ERR_DECRYPT on a bad tag. */
  decryptWithNonce(nonce: bigint, ciphertext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    const k = this.#key(nonce)
    if (ciphertext.length > this.#maxMessage) {
      throw new ThroughlineError(
        'ERR_NOISE_MESSAGE_TOO_LARGE',
        `a ciphertext of ${ciphertext.length} bytes is over ${this.#maxMessage} bytes`,
      )
    }
    return this.#crypto.aeadOpen(k, nonce, ad, ciphertext)
  }

  /**
   * Rekey() (§11.3): k = the first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros[32]).
   * The counter is unchanged. Both sides must rekey at the same point of the stream.
   */
  rekey(): void {
    const k = this.#key(0n)
    const sealed = this.#crypto.aeadSeal(k, NOISE_MAX_NONCE, EMPTY, REKEY_ZEROS)
    this.#k = sealed.slice(0, KEYLEN)
    sealed.fill(0)
    k.fill(0)
  }

  /**
   * An independent copy (same key and counter), e.g. to try a rekeyed key on a message and keep
   * it only if the message authenticates. Throws ERR_KEY_DESTROYED after destroy().
   */
  clone(): CipherState {
    const c = new CipherState(this.#crypto, this.#key(0n), this.#n)
    c.#maxMessage = this.#maxMessage
    return c
  }

  /** Wipe the key; every later operation throws ERR_KEY_DESTROYED. */
  destroy(): void {
    this.#k?.fill(0)
    this.#k = undefined
  }

  #key(nonce: bigint): Uint8Array {
    if (this.#k === undefined) throw new ThroughlineError('ERR_KEY_DESTROYED', 'this CipherState was destroyed')
    if (nonce === NOISE_MAX_NONCE) {
      throw new ThroughlineError('ERR_NONCE_EXHAUSTED', 'the nonce 2^64-1 is reserved; rekey or start a new session')
    }
    return this.#k
  }
}
