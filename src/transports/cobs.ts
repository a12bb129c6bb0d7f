/**
 * Consistent Overhead Byte Stuffing (Cheshire and Baker, 1999) with 0x00 as the frame delimiter.
 *
 * The encoding of `n` bytes contains no 0x00 and is at most `n + floor(n / 254) + 1` bytes long;
 * the encoder here never appends a code byte after a final full (0xFF) block, as in the paper and
 * the reference code on Wikipedia, so `01 02 … FE` (254 bytes) encodes to `FF 01 02 … FE`.
 * The delimiter itself is not part of the encoding: the framing layer writes it.
 *
 * - {@link cobsEncode} / {@link cobsDecode}: whole buffers.
 * - {@link CobsEncoder}: encodes a frame given in several pieces (header, payload slices, CRC)
 *   straight into an output buffer, without concatenating them first.
 * - The streaming decoder is the framing layer's state machine (serial-framing.ts).
 *
 * @module
 */

/** Largest encoded length of `n` bytes (without the delimiter). */
export function cobsMaxEncodedLength(n: number): number {
  return n + Math.floor(n / 254) + 1
}

/**
 * Encodes into `out` from `offset`, piece by piece: `begin()`, any number of `write()`, `end()`.
 * `out` must have room for {@link cobsMaxEncodedLength} of the total written.
 */
export class CobsEncoder {
  #out: Uint8Array = new Uint8Array(0)
  /** Where the code byte of the current block goes. */
  #codeAt = 0
  /** Next free position in `out`. */
  #at = 0
  /** Code of the current block: 1 + data bytes in it. */
  #code = 1

  begin(out: Uint8Array, offset: number): void {
    this.#out = out
    this.#codeAt = offset
    this.#at = offset + 1
    this.#code = 1
  }

  write(data: Uint8Array, start = 0, end = data.length): void {
    const out = this.#out
    let at = this.#at
    let code = this.#code
    let codeAt = this.#codeAt
    let i = start
    while (i < end) {
      // a full block is closed only when another byte follows it (no code byte after the last)
      if (code === 0xff) {
        out[codeAt] = 0xff
        codeAt = at++
        code = 1
      }
      // copy the non-zero run that fits in the block (native search and copy)
      const stop = Math.min(end, i + (0xff - code))
      const z = data.subarray(i, stop).indexOf(0)
      const take = z < 0 ? stop - i : z
      if (take > 0) {
        out.set(data.subarray(i, i + take), at)
        at += take
        code += take
        i += take
      }
      if (z >= 0) {
        // a zero ends the block
        out[codeAt] = code
        codeAt = at++
        code = 1
        i++
      }
    }
    this.#at = at
    this.#code = code
    this.#codeAt = codeAt
  }

  /** Closes the last block; returns the offset after the encoding. */
  end(): number {
    this.#out[this.#codeAt] = this.#code
    const at = this.#at
    this.#out = new Uint8Array(0)
    return at
  }
}

/** The COBS encoding of `data` (without a delimiter). */
export function cobsEncode(data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(cobsMaxEncodedLength(data.length))
  const enc = new CobsEncoder()
  enc.begin(out, 0)
  enc.write(data)
  return out.subarray(0, enc.end())
}

/**
 * Decodes one COBS frame (without its delimiter). Returns undefined when `encoded` is not a
 * valid encoding: it contains 0x00, or a block runs past its end. Never throws on bad input.
 */
export function cobsDecode(encoded: Uint8Array): Buffer | undefined {
  const n = encoded.length
  if (n === 0) return undefined
  const out = Buffer.allocUnsafe(n)
  let at = 0
  let i = 0
  while (i < n) {
    const code = encoded[i++]!
    if (code === 0) return undefined
    const blockEnd = i + code - 1
    if (blockEnd > n) return undefined
    for (; i < blockEnd; i++) {
      const b = encoded[i]!
      if (b === 0) return undefined
      out[at++] = b
    }
    // a block shorter than 254 data bytes stands for its data and a zero, except at the end
    if (code !== 0xff && i < n) out[at++] = 0
  }
  return out.subarray(0, at)
}
