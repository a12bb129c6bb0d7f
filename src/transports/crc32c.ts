/**
 * CRC-32C (Castagnoli): polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final
 * XOR 0xFFFFFFFF, input and output reflected. The check value of the ASCII bytes "123456789" is
 * 0xE3069283. Table-driven, eight bytes per step ("slicing by 8") with a byte-wise tail.
 *
 * @module
 */

const POLY = 0x82f63b78

/** 8 tables of 256 entries: T[k][b] is the CRC of byte b followed by k zero bytes. */
const T = new Int32Array(8 * 256)
for (let b = 0; b < 256; b++) {
  let c = b
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
  T[b] = c
}
for (let b = 0; b < 256; b++) {
  let c = T[b]!
  for (let k = 1; k < 8; k++) {
    c = T[c & 0xff]! ^ (c >>> 8)
    T[k * 256 + b] = c
  }
}

/**
 * The CRC-32C of `data[start, end)`. To checksum data in pieces, pass the previous result as
 * `previous`: `crc32c(b, 0, b.length, crc32c(a))` equals the CRC of `a` followed by `b`.
 */
export function crc32c(data: Uint8Array, start = 0, end = data.length, previous = 0): number {
  let c = ~previous
  let i = start
  const n8 = end - ((end - start) & 7)
  while (i < n8) {
    const lo = c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))
    c =
      T[7 * 256 + (lo & 0xff)]! ^
      T[6 * 256 + ((lo >>> 8) & 0xff)]! ^
      T[5 * 256 + ((lo >>> 16) & 0xff)]! ^
      T[4 * 256 + (lo >>> 24)]! ^
      T[3 * 256 + data[i + 4]!]! ^
      T[2 * 256 + data[i + 5]!]! ^
      T[256 + data[i + 6]!]! ^
      T[data[i + 7]!]!
    i += 8
  }
  while (i < end) c = T[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}
