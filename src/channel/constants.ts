/**
 * Constants of the secure channel layer.
 *
 * Spec constants (fixed by the Noise Protocol Framework, revision 34, and by the primitives of the
 * suite `25519_ChaChaPoly_SHA256`) are kept apart from tunables (choices of this project that a
 * deployment may want to change).
 *
 * @module
 */

// ---- Noise spec constants (noiseprotocol.org/noise.html, rev 34) ----

/** §4.1: length in bytes of an X25519 public key and of a DH output. */
export const DHLEN = 32

/** §4.3: length in bytes of a SHA-256 output. */
export const HASHLEN = 32

/** §4.2: length in bytes of a ChaChaPoly cipher key. */
export const KEYLEN = 32

/** §4.2: length in bytes of a ChaChaPoly authentication tag. */
export const TAGLEN = 16

/** §3: every Noise message (handshake or transport) is at most this many bytes. */
export const NOISE_MAX_MESSAGE = 65535

/** §5.1: the nonce 2^64-1 is reserved (for REKEY); a CipherState refuses to use it. */
export const NOISE_MAX_NONCE = 2n ** 64n - 1n

/** §12.4 / §5.2: the ChaChaPoly AEAD nonce is 32 bits of zeros then the 64-bit little-endian counter. */
export const AEAD_NONCE_LENGTH = 12

// ---- tunables ----

/**
 * Width of the transport replay window: how many counters below the highest one seen may still be
 * accepted (once each) when messages arrive out of order across hops.
 */
export const REPLAY_WINDOW = 2048

/** Rekey a transport CipherState (Noise REKEY, §11.3) every this many messages. */
export const DEFAULT_REKEY_INTERVAL = 2 ** 16
