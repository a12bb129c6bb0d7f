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
 * Speed: heads are written by a hand-made encoder that is byte-identical to msgpackr's
 * `pack({ o, r })`, and headers of the usual shape are read by a hand-made decoder that falls back
 * to msgpackr for anything else (test/codec-identity.test.ts proves both). A connection passes an
 * {@link EncodeCache} and a {@link DecodeCache}: frames on one connection mostly repeat one header,
 * which is then copied or recognised instead of being built or parsed again.
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

function texts(r: readonly Address[], start = 0): string[] {
  const out = new Array<string>(Math.max(0, r.length - start))
  for (let i = start; i < r.length; i++) out[i - start] = r[i]!.text
  return out
}

/** Bytes of the varint that encodes a header length (headers stay below 2^21). */
function varintLength(hlen: number): number {
  return hlen < 0x80 ? 1 : hlen < 0x4000 ? 2 : 3
}

/** Writes `version | varint hlen` at `reserve`; returns where the header goes. */
function writeVersionAndLength(head: Buffer, reserve: number, hlen: number): number {
  let p = reserve
  head[p++] = ENVELOPE_VERSION
  let v = hlen
  while (v >= 0x80) {
    head[p++] = (v & 0x7f) | 0x80
    v >>>= 7
  }
  head[p++] = v
  return p
}

/** The reference encoder (msgpackr), used for what the fast encoder does not handle. */
function encodeHeadMsgpackr(onward: readonly Address[], start: number, ret: readonly Address[], reserve: number): Buffer {
  const header = packr.pack({ o: texts(onward, start), r: texts(ret) })
  const hlen = header.length
  const head = Buffer.allocUnsafe(reserve + 1 + varintLength(hlen) + hlen)
  const p = writeVersionAndLength(head, reserve, hlen)
  header.copy(head, p)
  return head
}

// ---- fast header encoder ----------------------------------------------------------------------
//
// The header is always the map `{ o: [text...], r: [text...] }`. msgpackr (useRecords: false)
// writes it as map16 `de 00 02`, the keys as fixstr `a1 6f` / `a1 72`, each array as fixarray
// (`9N`, N < 16) or array16 (`dc NN NN`), then each address text as msgpackr encodes a string.
// The fast encoder writes exactly these bytes, taking each text's encoding from a cache filled by
// msgpackr itself (`packr.pack(text)`: a string's encoding does not depend on where it stands), so
// the output is byte-identical to `packr.pack({ o, r })` (test/codec-identity.test.ts checks it).

const MAP_O = [0xde, 0x00, 0x02, 0xa1, 0x6f] as const
const KEY_R = [0xa1, 0x72] as const
/** Address text → its msgpack string encoding (a private copy). */
const strCache = new Map<string, Uint8Array>()
const STR_CACHE_MAX = 4096
/** Reused scratch list of the encoded texts of one header (the encoder is synchronous). */
const scratch: Uint8Array[] = []

function encodedText(a: Address): Uint8Array {
  const text = a.text
  let e = strCache.get(text)
  if (e === undefined) {
    e = new Uint8Array(packr.pack(text)) // a copy: msgpackr reuses its buffer
    if (strCache.size >= STR_CACHE_MAX) strCache.clear()
    strCache.set(text, e)
  }
  return e
}

function copyInto(dst: Buffer, src: Uint8Array, p: number): number {
  const n = src.length
  if (n > 24) {
    dst.set(src, p)
    return p + n
  }
  for (let i = 0; i < n; i++) dst[p + i] = src[i]!
  return p + n
}

/**
 * Encodes the head of an envelope (everything but the payload) into one buffer, leaving `reserve`
 * zero bytes at its start for a transport's own prefix (e.g. the TCP length).
 */
export function encodeHead(onward: readonly Address[], ret: readonly Address[], reserve = 0): Buffer {
  return encodeHeadFrom(onward, 0, ret, reserve)
}

/**
 * As {@link encodeHead}, for the onward route `onward.slice(start)` without building that array
 * (a connection pops its own address this way). With a `cache` and no `reserve`, the head returned
 * may be the cached one itself, shared by every frame of the same routes: it must not be modified.
 */
export function encodeHeadFrom(onward: readonly Address[], start: number, ret: readonly Address[], reserve = 0, cache?: EncodeCache): Buffer {
  const no = onward.length - start
  const nr = ret.length
  if (no < 0 || no > 0xffff || nr > 0xffff) return encodeHeadMsgpackr(onward, Math.max(0, start), ret, reserve)
  if (cache !== undefined && cache.bytes !== undefined && sameRoutes(cache, onward, start, ret)) {
    const bytes = cache.bytes
    if (reserve === 0) return bytes
    const head = Buffer.allocUnsafe(reserve + bytes.length)
    head.set(bytes, reserve)
    return head
  }
  const head = encodeFast(onward, start, ret, reserve, no, nr)
  if (cache !== undefined && head.length - reserve <= ENCODE_CACHE_BYTES) {
    cache.onward = onward.slice(start)
    cache.return = ret.slice()
    // never modified after this (it may be handed out as the head itself)
    cache.bytes = reserve === 0 ? head : Buffer.from(head.subarray(reserve))
  }
  return head
}

/**
 * A one-entry memory of the last head encoded for one stream of frames (a connection): messages
 * on one connection mostly carry the same routes (the same Address objects), whose encoding is
 * then copied instead of being built again. Create one per connection with {@link createEncodeCache}.
 */
export interface EncodeCache {
  onward: Address[]
  return: Address[]
  /** The head after the reserved bytes (version, header length, header); never modified. */
  bytes: Buffer | undefined
}

const ENCODE_CACHE_BYTES = 512

export function createEncodeCache(): EncodeCache {
  return { onward: [], return: [], bytes: undefined }
}

function sameRoutes(cache: EncodeCache, onward: readonly Address[], start: number, ret: readonly Address[]): boolean {
  const co = cache.onward
  const cr = cache.return
  if (co.length !== onward.length - start || cr.length !== ret.length) return false
  for (let i = 0; i < co.length; i++) if (co[i] !== onward[start + i]) return false
  for (let i = 0; i < cr.length; i++) if (cr[i] !== ret[i]) return false
  return true
}

function encodeFast(onward: readonly Address[], start: number, ret: readonly Address[], reserve: number, no: number, nr: number): Buffer {
  let hlen = 5 + (no < 16 ? 1 : 3) + 2 + (nr < 16 ? 1 : 3)
  let k = 0
  for (let i = start; i < onward.length; i++) {
    const e = encodedText(onward[i]!)
    scratch[k++] = e
    hlen += e.length
  }
  for (let i = 0; i < nr; i++) {
    const e = encodedText(ret[i]!)
    scratch[k++] = e
    hlen += e.length
  }
  if (hlen >= 0x200000) {
    scratch.length = 0
    return encodeHeadMsgpackr(onward, start, ret, reserve)
  }
  const head = Buffer.allocUnsafe(reserve + 1 + varintLength(hlen) + hlen)
  let p = writeVersionAndLength(head, reserve, hlen)
  head[p++] = MAP_O[0]
  head[p++] = MAP_O[1]
  head[p++] = MAP_O[2]
  head[p++] = MAP_O[3]
  head[p++] = MAP_O[4]
  k = 0
  if (no < 16) head[p++] = 0x90 | no
  else {
    head[p++] = 0xdc
    head[p++] = no >> 8
    head[p++] = no & 0xff
  }
  for (let i = 0; i < no; i++) p = copyInto(head, scratch[k++]!, p)
  head[p++] = KEY_R[0]
  head[p++] = KEY_R[1]
  if (nr < 16) head[p++] = 0x90 | nr
  else {
    head[p++] = 0xdc
    head[p++] = nr >> 8
    head[p++] = nr & 0xff
  }
  for (let i = 0; i < nr; i++) p = copyInto(head, scratch[k++]!, p)
  // drop references to cached encodings beyond this call
  if (k > 64) scratch.length = 0
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

// ---- fast header decoder --------------------------------------------------------------------------
//
// Decodes exactly the shape the encoder writes — map16 `de 00 02` or fixmap `82`, key "o" then key
// "r", each an array (fixarray or array16) of ASCII strings (fixstr or str8) — with nothing after
// it. Anything else, and anything that would be an error, leaves the fast path and is decoded by
// msgpackr as before, so results and errors are those of the reference path (the identity test
// compares both on random and corrupted frames).

const ADDRESS_BYTES = 0x100

function fastRoute(frame: Uint8Array, p: number, end: number, max: number, out: Address[]): number {
  if (p >= end) return -1
  const t = frame[p++]!
  let n: number
  if ((t & 0xf0) === 0x90) n = t & 0x0f
  else if (t === 0xdc) {
    if (p + 2 > end) return -1
    n = (frame[p]! << 8) | frame[p + 1]!
    p += 2
  } else return -1
  if (n > max) return -1
  for (let i = 0; i < n; i++) {
    if (p >= end) return -1
    const s = frame[p++]!
    let len: number
    if ((s & 0xe0) === 0xa0) len = s & 0x1f
    else if (s === 0xd9) {
      if (p >= end) return -1
      len = frame[p++]!
    } else return -1
    const stop = p + len
    if (stop > end || len === 0 || len >= ADDRESS_BYTES) return -1
    for (let j = p; j < stop; j++) if (frame[j]! >= 0x80) return -1 // not ASCII: msgpackr decodes it
    const text = latin1(frame, p, stop)
    let a: Address
    try {
      a = parseAddress(text)
    } catch {
      return -1
    }
    out.push(a)
    p = stop
  }
  return p
}

type Latin1Slice = (this: Uint8Array, start: number, end: number) => string
/** Node's native latin1 decoder (undocumented but long-standing), else the documented route to it. */
const latin1Slice: Latin1Slice =
  (Buffer.prototype as unknown as { latin1Slice?: Latin1Slice }).latin1Slice ??
  function (this: Uint8Array, start: number, end: number): string {
    return Buffer.from(this.buffer, this.byteOffset, this.byteLength).toString('latin1', start, end)
  }

function latin1(frame: Uint8Array, start: number, end: number): string {
  return latin1Slice.call(frame, start, end)
}

/** Decodes the header at `frame[p, end)` on the fast path, or returns false. */
function fastHeader(frame: Uint8Array, p: number, end: number, limits: CodecLimits, onward: Address[], ret: Address[]): boolean {
  if (frame[p] === 0xde) {
    if (p + 3 > end || frame[p + 1] !== 0 || frame[p + 2] !== 2) return false
    p += 3
  } else if (frame[p] === 0x82) p += 1
  else return false
  if (p + 2 > end || frame[p] !== 0xa1 || frame[p + 1] !== 0x6f) return false
  p = fastRoute(frame, p + 2, end, limits.maxRouteLength, onward)
  if (p < 0 || p + 2 > end || frame[p] !== 0xa1 || frame[p + 1] !== 0x72) return false
  p = fastRoute(frame, p + 2, end, limits.maxRouteLength, ret)
  return p === end
}

/**
 * A one-entry memory of the last header decoded, for one stream of frames (a connection): its
 * frames usually repeat the same header, which is then recognised by its bytes and not decoded
 * again. Create one per connection with {@link createDecodeCache}.
 */
export interface DecodeCache {
  /** The last header's bytes (the first `length` of them). */
  bytes: Uint8Array
  /** The same, as little-endian 32-bit words (the whole words of the first `length` bytes). */
  words: Uint32Array
  length: number
  /** The limits it was checked against. */
  limits: CodecLimits | undefined
  onward: Address[]
  return: Address[]
  /** Counts the headers the cache has held: a new value means a new header. */
  generation: number
  /** Did the last decode through this cache find its header already there? */
  lastHit: boolean
}

const DECODE_CACHE_BYTES = 512

/**
 * A Buffer view made without `Buffer.from`'s argument checks: a Uint8Array subclass whose
 * prototype chain holds `Buffer.prototype`, as Node's own FastBuffer is made. It is a Buffer in
 * every respect that matters (`instanceof Buffer`, `Buffer.isBuffer`, every Buffer method), and
 * costs about 25 ns to make where `Buffer.from(arrayBuffer, offset, length)` costs 80 here.
 */
class BufferView extends Uint8Array {}
Object.setPrototypeOf(BufferView.prototype, Buffer.prototype)

/** `buf.subarray(start, end)`: the same view (a Buffer when `buf` is one), made cheaply. */
export function byteView(buf: Uint8Array, start: number, end: number): Uint8Array {
  return buf instanceof Buffer ? (new BufferView(buf.buffer, buf.byteOffset + start, end - start) as Buffer) : buf.subarray(start, end)
}

function tail(frame: Uint8Array, start: number): Uint8Array {
  return byteView(frame, start, frame.length)
}

export function createDecodeCache(): DecodeCache {
  return { bytes: new Uint8Array(DECODE_CACHE_BYTES), words: new Uint32Array(DECODE_CACHE_BYTES / 4), length: -1, limits: undefined, onward: [], return: [], generation: 0, lastHit: false }
}

/**
 * Where the payload of the envelope `buf[start, end)` starts (an offset into `buf`), when its
 * header is the one in `cache` (checked against the same limits); else -1. Allocates nothing: a
 * connection's fast path recognises a stream's repeated header with it.
 */
export function cachedPayloadOffset(buf: Uint8Array, start: number, end: number, limits: CodecLimits, cache: DecodeCache): number {
  const hlen = cache.length
  if (hlen < 0 || cache.limits !== limits) return -1
  if (end - start < 2 || buf[start] !== ENVELOPE_VERSION) return -1
  let p = start + 1
  let v = 0
  let shift = 0
  for (;;) {
    if (p >= end || shift > 14) return -1
    const b = buf[p++]!
    v |= (b & 0x7f) << shift
    if ((b & 0x80) === 0) break
    shift += 7
  }
  if (v !== hlen || p + hlen > end) return -1
  return sameHeader(cache, buf, p, hlen) ? p + hlen : -1
}

/**
 * Are `buf[p, p + hlen)` the cached header's bytes? Four bytes at a time through a DataView of
 * `buf` (one per chunk when frames are ranges of it): about half the time of a byte loop for the
 * ~100-byte headers of relayed traffic.
 */
function sameHeader(cache: DecodeCache, buf: Uint8Array, p: number, hlen: number): boolean {
  const d = dataViewOf(buf)
  const w = cache.words
  let i = 0
  for (; i + 4 <= hlen; i += 4) if (d.getUint32(p + i, true) !== w[i >> 2]) return false
  const b = cache.bytes
  for (; i < hlen; i++) if (b[i] !== buf[p + i]) return false
  return true
}

let dvOf: Uint8Array | undefined
let dvLast: DataView = new DataView(new ArrayBuffer(0))

/** A DataView of `buf`, the same one for calls on the same buffer in a row (the frames of one chunk). */
export function dataViewOf(buf: Uint8Array): DataView {
  if (buf !== dvOf) {
    dvOf = buf
    dvLast = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }
  return dvLast
}

function cacheHit(cache: DecodeCache, frame: Uint8Array, p: number, hlen: number, limits: CodecLimits): boolean {
  return cache.length === hlen && cache.limits === limits && sameHeader(cache, frame, p, hlen)
}

/**
 * Decodes an envelope. The returned payload shares memory with `frame`.
 * Throws ERR_UNSUPPORTED_VERSION, ERR_HEADER_TOO_LARGE, ERR_ROUTE_TOO_LONG or ERR_MALFORMED_ENVELOPE.
 * `cache` (optional, one per stream of frames) skips decoding a header identical to the last one.
 */
export function decodeEnvelope(frame: Uint8Array, limits: CodecLimits = DEFAULT_CODEC_LIMITS, cache?: DecodeCache): Envelope {
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
  const end = p + hlen
  if (cache !== undefined) {
    if (cacheHit(cache, frame, p, hlen, limits)) {
      cache.lastHit = true
      return { onward: cache.onward.slice(), return: cache.return.slice(), payload: tail(frame, end) }
    }
    cache.lastHit = false
  }
  const onward: Address[] = []
  const ret: Address[] = []
  if (fastHeader(frame, p, end, limits, onward, ret)) {
    if (cache !== undefined && hlen <= DECODE_CACHE_BYTES) {
      cache.bytes.set(frame.subarray(p, end))
      const dv = new DataView(cache.bytes.buffer, cache.bytes.byteOffset, cache.bytes.length)
      for (let i = 0; i + 4 <= hlen; i += 4) cache.words[i >> 2] = dv.getUint32(i, true)
      cache.length = hlen
      cache.limits = limits
      cache.onward = onward.slice()
      cache.return = ret.slice()
      cache.generation++
    }
    return { onward, return: ret, payload: tail(frame, end) }
  }
  return decodeSlow(frame, p, end, limits)
}

/** The reference decoder (msgpackr) and its checks. */
function decodeSlow(frame: Uint8Array, p: number, end: number, limits: CodecLimits): Envelope {
  let header: unknown
  try {
    header = unpackr.unpack(frame.subarray(p, end))
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
    payload: frame.subarray(end),
  }
}
