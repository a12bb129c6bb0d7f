/**
 * SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104) and the Noise HKDF (rev 34 §4.3) in plain
 * JavaScript, for the SHORT inputs of a Noise handshake (32-112 bytes).
 *
 * Why it exists: the `node` backend calls these for inputs under a few hundred bytes. Each
 * node:crypto Hash/Hmac is a native object (construction, finalizer, GC weak-handle work): a
 * handshake makes ~40 of them, and replacing them with this code made complete XX handshakes
 * ~20% faster (bench/noise.ts). Larger inputs still go to node:crypto, which wins from ~512 B.
 *
 * Correctness is checked against node:crypto on random inputs of every length class, the
 * FIPS/RFC 4231 vectors and the Noise vectors (test/noise.test.ts). SHA-256 has no
 * data-dependent branches or table lookups, so this code is constant-time in its inputs.
 * Not re-entrant-safe across threads (module scratch buffers); JS is single-threaded per realm.
 *
 * @module
 */

/** FIPS 180-4 §4.2.2 round constants. */
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
])

/** FIPS 180-4 §5.3.3 initial hash value. */
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19])

const BLOCK = 64
/** Scratch: working state, message schedule, partial block, HMAC key pad (wiped after each use). */
const ST = new Int32Array(8)
const W = new Int32Array(64)
const PARTIAL = new Uint8Array(BLOCK)
const PAD = new Uint8Array(BLOCK)

/** The compression function (§6.2.2) on the 64 bytes of `b` at `off`, updating `st`. */
function compress(st: Int32Array, b: Uint8Array, off: number): void {
  for (let i = 0; i < 16; i++) {
    const j = off + i * 4
    W[i] = (b[j]! << 24) | (b[j + 1]! << 16) | (b[j + 2]! << 8) | b[j + 3]!
  }
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!
    const y = W[i - 2]!
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10)
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0
  }
  let a = st[0]!, b1 = st[1]!, c = st[2]!, d = st[3]!, e = st[4]!, f = st[5]!, g = st[6]!, h = st[7]!
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))
    const t2 = (S0 + ((a & b1) ^ (a & c) ^ (b1 & c))) | 0
    h = g
    g = f
    f = e
    e = (d + t1) | 0
    d = c
    c = b1
    b1 = a
    a = (t1 + t2) | 0
  }
  st[0] = (st[0]! + a) | 0
  st[1] = (st[1]! + b1) | 0
  st[2] = (st[2]! + c) | 0
  st[3] = (st[3]! + d) | 0
  st[4] = (st[4]! + e) | 0
  st[5] = (st[5]! + f) | 0
  st[6] = (st[6]! + g) | 0
  st[7] = (st[7]! + h) | 0
}

/**
 * Hash the concatenation of `parts`, starting from `init` (not modified), a state that has
 * already absorbed `absorbed` bytes (a multiple of 64: 0 for plain SHA-256, 64 after an HMAC pad).
 */
function digestFrom(init: Int32Array, absorbed: number, parts: readonly Uint8Array[]): Uint8Array {
  const st = ST
  st.set(init)
  let total = absorbed
  let fill = 0
  for (const p of parts) {
    const length = p.length
    total += length
    let i = 0
    while (i < length) {
      if (fill === 0 && length - i >= BLOCK) {
        compress(st, p, i) // whole blocks straight from the input
        i += BLOCK
      } else {
        PARTIAL[fill++] = p[i++]! // byte copies: cheaper than subarray() + set() for short inputs
        if (fill === BLOCK) {
          compress(st, PARTIAL, 0)
          fill = 0
        }
      }
    }
  }
  // §5.1.1 padding: 0x80, zeros, then the bit length as a 64-bit big-endian integer.
  PARTIAL[fill++] = 0x80
  if (fill > BLOCK - 8) {
    PARTIAL.fill(0, fill)
    compress(st, PARTIAL, 0)
    fill = 0
  }
  PARTIAL.fill(0, fill, BLOCK - 8)
  const hi = Math.floor(total / 0x20000000) // total * 8 / 2^32
  const lo = (total << 3) >>> 0
  PARTIAL[56] = hi >>> 24
  PARTIAL[57] = hi >>> 16
  PARTIAL[58] = hi >>> 8
  PARTIAL[59] = hi
  PARTIAL[60] = lo >>> 24
  PARTIAL[61] = lo >>> 16
  PARTIAL[62] = lo >>> 8
  PARTIAL[63] = lo
  compress(st, PARTIAL, 0)
  const out = new Uint8Array(32)
  for (let i = 0; i < 8; i++) {
    const v = st[i]!
    out[i * 4] = v >>> 24
    out[i * 4 + 1] = v >>> 16
    out[i * 4 + 2] = v >>> 8
    out[i * 4 + 3] = v
  }
  PARTIAL.fill(0)
  W.fill(0)
  st.fill(0)
  return out
}

/** SHA-256 of the concatenation of `parts`. */
export function sha256(parts: readonly Uint8Array[]): Uint8Array {
  return digestFrom(IV, 0, parts)
}

/** The inner and outer HMAC states of `key` (RFC 2104: key ⊕ ipad, key ⊕ opad absorbed). */
function hmacStates(key: Uint8Array): [Int32Array, Int32Array] {
  const k = key.length > BLOCK ? sha256([key]) : key
  const inner = IV.slice()
  const outer = IV.slice()
  // (No reads past k.length: out-of-bounds typed-array reads are a slow path in V8.)
  PAD.fill(0x36)
  for (let i = 0; i < k.length; i++) PAD[i] = k[i]! ^ 0x36
  compress(inner, PAD, 0)
  PAD.fill(0x5c)
  for (let i = 0; i < k.length; i++) PAD[i] = k[i]! ^ 0x5c
  compress(outer, PAD, 0)
  PAD.fill(0)
  W.fill(0)
  if (k !== key) k.fill(0)
  return [inner, outer]
}

/** HMAC with prepared states: H(key ⊕ opad || H(key ⊕ ipad || message)). */
function mac(inner: Int32Array, outer: Int32Array, parts: readonly Uint8Array[]): Uint8Array {
  const innerHash = digestFrom(inner, BLOCK, parts)
  const out = digestFrom(outer, BLOCK, [innerHash])
  innerHash.fill(0)
  return out
}

/** HMAC-SHA256 of the concatenation of `parts` under `key`. */
export function hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array {
  const [inner, outer] = hmacStates(key)
  const out = mac(inner, outer, parts)
  inner.fill(0)
  outer.fill(0)
  return out
}

const BYTE_1 = new Uint8Array([1])
const BYTE_2 = new Uint8Array([2])
const BYTE_3 = new Uint8Array([3])

/**
 * HKDF(chaining_key, input_key_material, num_outputs) of Noise §4.3:
 * temp_key = HMAC(ck, ikm); output1 = HMAC(temp_key, 0x01); output2 = HMAC(temp_key, output1 || 0x02);
 * output3 = HMAC(temp_key, output2 || 0x03). The temp_key pads are computed once for all outputs.
 */
export function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, n: 2 | 3): Uint8Array[] {
  const tempKey = hmacSha256(chainingKey, [ikm])
  const [inner, outer] = hmacStates(tempKey)
  tempKey.fill(0)
  const out1 = mac(inner, outer, [BYTE_1])
  const out2 = mac(inner, outer, [out1, BYTE_2])
  const outputs = n === 2 ? [out1, out2] : [out1, out2, mac(inner, outer, [out2, BYTE_3])]
  inner.fill(0)
  outer.fill(0)
  return outputs
}
