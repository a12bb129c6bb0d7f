/**
 * The versioned wire envelope:
 *
 * ```
 * u8 version (=1) | varint headerLength | msgpack header { o: [addr...], r: [addr...] } | payload bytes
 * ```
 *
 * Addresses travel in their `type#value` text form. The payload is never copied or re-encoded:
 * encoding returns the head (version, length, header) and the payload as separate buffers, and
 * decoding returns the payload as a view into the frame. A relay hop therefore re-encodes only
 * the small header. Every length is checked against its limit before anything is allocated, and
 * every failure is a typed error for that one frame.
 *
 * Header keys other than `o` and `r` are ignored (reserved for later versions).
 *
 * @module
 */
import { Packr, Unpackr } from 'msgpackr'
import { tlError } from '../errors.ts'
import { type Address, parseAddress } from './address.ts'
import { DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_ROUTE_LENGTH, ENVELOPE_VERSION } from './constants.ts'

const packr = new Packr({ useRecords: false, moreTypes: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false })

/** Limits applied when decoding. */
export interface CodecLimits {
  maxHeaderSize: number
  maxRouteLength: number
}

export const DEFAULT_CODEC_LIMITS: CodecLimits = {
  maxHeaderSize: DEFAULT_MAX_HEADER_SIZE,
  maxRouteLength: DEFAULT_MAX_ROUTE_LENGTH,
}

/** A decoded envelope. `payload` is a view into the frame it came from. */
export interface Envelope {
  onward: Address[]
  return: Address[]
  payload: Uint8Array
}

function texts(r: readonly Address[]): string[] {
  const out = new Array<string>(r.length)
  for (let i = 0; i < r.length; i++) out[i] = r[i]!.text
  return out
}

/**
 * Encodes the head of an envelope (everything but the payload) into one buffer, leaving `reserve`
 * zero bytes at its start for a transport's own prefix (e.g. the TCP length).
 */
export function encodeHead(onward: readonly Address[], ret: readonly Address[], reserve = 0): Buffer {
  const header = packr.pack({ o: texts(onward), r: texts(ret) })
  const hlen = header.length
  const varintLen = hlen < 0x80 ? 1 : hlen < 0x4000 ? 2 : 3
  const head = Buffer.allocUnsafe(reserve + 1 + varintLen + hlen)
  let p = reserve
  head[p++] = ENVELOPE_VERSION
  let v = hlen
  while (v >= 0x80) {
    head[p++] = (v & 0x7f) | 0x80
    v >>>= 7
  }
  head[p++] = v
  header.copy(head, p)
  return head
}

/** Encodes a whole envelope into one buffer (tests, and transports that need one buffer). */
export function encodeEnvelope(onward: readonly Address[], ret: readonly Address[], payload: Uint8Array): Buffer {
  return Buffer.concat([encodeHead(onward, ret), payload])
}

function routeOf(value: unknown, field: string, limits: CodecLimits): Address[] {
  if (!Array.isArray(value)) throw tlError('ERR_MALFORMED_ENVELOPE', `header field "${field}" is not an array`)
  if (value.length > limits.maxRouteLength) {
    throw tlError('ERR_ROUTE_TOO_LONG', `${field === 'o' ? 'onward' : 'return'} route has ${value.length} hops (limit ${limits.maxRouteLength})`)
  }
  const out = new Array<Address>(value.length)
  for (let i = 0; i < value.length; i++) {
    const t = value[i] as unknown
    if (typeof t !== 'string') throw tlError('ERR_MALFORMED_ENVELOPE', `header field "${field}"[${i}] is not a string`)
    try {
      out[i] = parseAddress(t)
    } catch (err) {
      throw tlError('ERR_MALFORMED_ENVELOPE', `header field "${field}"[${i}]: ${(err as Error).message}`, { cause: err })
    }
  }
  return out
}

/**
 * Decodes an envelope. The returned payload shares memory with `frame`.
 * Throws ERR_UNSUPPORTED_VERSION, ERR_HEADER_TOO_LARGE, ERR_ROUTE_TOO_LONG or ERR_MALFORMED_ENVELOPE.
 */
export function decodeEnvelope(frame: Uint8Array, limits: CodecLimits = DEFAULT_CODEC_LIMITS): Envelope {
  const n = frame.length
  if (n < 2) throw tlError('ERR_MALFORMED_ENVELOPE', `envelope of ${n} bytes is too short`)
  if (frame[0] !== ENVELOPE_VERSION) {
    throw tlError('ERR_UNSUPPORTED_VERSION', `envelope version ${frame[0]} (this node speaks ${ENVELOPE_VERSION})`)
  }
  // varint header length: at most 3 bytes (headers are limited well below 2^21)
  let p = 1
  let hlen = 0
  let shift = 0
  for (;;) {
    if (p >= n) throw tlError('ERR_MALFORMED_ENVELOPE', 'truncated header length')
    const b = frame[p++]!
    hlen |= (b & 0x7f) << shift
    if ((b & 0x80) === 0) break
    shift += 7
    if (shift > 14) throw tlError('ERR_HEADER_TOO_LARGE', 'header length varint is longer than 3 bytes')
  }
  if (hlen > limits.maxHeaderSize) {
    throw tlError('ERR_HEADER_TOO_LARGE', `header of ${hlen} bytes (limit ${limits.maxHeaderSize})`)
  }
  if (hlen === 0 || p + hlen > n) {
    throw tlError('ERR_MALFORMED_ENVELOPE', `header length ${hlen} does not fit the ${n}-byte envelope`)
  }
  let header: unknown
  try {
    header = unpackr.unpack(frame.subarray(p, p + hlen))
  } catch (err) {
    throw tlError('ERR_MALFORMED_ENVELOPE', `header is not valid msgpack: ${(err as Error).message}`, { cause: err })
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw tlError('ERR_MALFORMED_ENVELOPE', 'header is not a map')
  }
  const h = header as Record<string, unknown>
  return {
    onward: routeOf(h['o'], 'o', limits),
    return: routeOf(h['r'], 'r', limits),
    payload: frame.subarray(p + hlen),
  }
}
