// The fast envelope codec (src/router/codec.ts) against the reference: msgpackr's `pack({ o, r })`
// for encoding, and the original msgpackr-based decoder (copied below verbatim from the first
// version of codec.ts) for decoding — byte-identical heads, equal envelopes, and the same error
// (code and message) for every malformed input, including random corruptions of valid frames.
import t from 'tap'
import fc from 'fast-check'
import { Packr, Unpackr } from 'msgpackr'
import { tlError, isThroughlineError } from '../src/errors.ts'
import {
  Address,
  type CodecLimits,
  DEFAULT_CODEC_LIMITS,
  createDecodeCache,
  createEncodeCache,
  decodeEnvelope,
  encodeEnvelope,
  encodeHead,
  encodeHeadFrom,
  parseAddress,
} from '../src/router/index.ts'

// ---- reference implementation (the original msgpackr codec) ------------------------------------

const packr = new Packr({ useRecords: false, moreTypes: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false })

function refEncodeHead(onward: readonly Address[], ret: readonly Address[], reserve = 0): Buffer {
  const header = packr.pack({ o: onward.map((a) => a.text), r: ret.map((a) => a.text) })
  const hlen = header.length
  const varintLen = hlen < 0x80 ? 1 : hlen < 0x4000 ? 2 : 3
  const head = Buffer.alloc(reserve + 1 + varintLen + hlen)
  let p = reserve
  head[p++] = 1
  let v = hlen
  while (v >= 0x80) {
    head[p++] = (v & 0x7f) | 0x80
    v >>>= 7
  }
  head[p++] = v
  header.copy(head, p)
  return head
}

function refRouteOf(value: unknown, field: string, limits: CodecLimits): Address[] {
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

function refDecode(frame: Uint8Array, limits: CodecLimits = DEFAULT_CODEC_LIMITS) {
  const n = frame.length
  if (n < 2) throw tlError('ERR_MALFORMED_ENVELOPE', `envelope of ${n} bytes is too short`)
  if (frame[0] !== 1) throw tlError('ERR_UNSUPPORTED_VERSION', `envelope version ${frame[0]} (this node speaks 1)`)
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
  if (hlen > limits.maxHeaderSize) throw tlError('ERR_HEADER_TOO_LARGE', `header of ${hlen} bytes (limit ${limits.maxHeaderSize})`)
  if (hlen === 0 || p + hlen > n) throw tlError('ERR_MALFORMED_ENVELOPE', `header length ${hlen} does not fit the ${n}-byte envelope`)
  let header: unknown
  try {
    header = unpackr.unpack(frame.subarray(p, p + hlen))
  } catch (err) {
    throw tlError('ERR_MALFORMED_ENVELOPE', `header is not valid msgpack: ${(err as Error).message}`, { cause: err })
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw tlError('ERR_MALFORMED_ENVELOPE', 'header is not a map')
  const h = header as Record<string, unknown>
  return { onward: refRouteOf(h['o'], 'o', limits), return: refRouteOf(h['r'], 'r', limits), payload: frame.subarray(p + hlen) }
}

// ---- generators ---------------------------------------------------------------------------------

const value = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.:-]{1,40}$/) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 32, maxLength: 32 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 90 }) }, // any code points
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 20, maxLength: 250 }) }, // str8 lengths
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 80 }).map((s) => `${s}\ud800`) }, // lone surrogates
)
const addr = fc
  .tuple(fc.integer({ min: 0, max: 255 }), value)
  .filter(([, v]) => Buffer.byteLength(v) <= 255)
  .map(([type, v]) => new Address(type, v))
const routeArb = (max: number) => fc.array(addr, { maxLength: max })

function outcome(f: () => { onward: Address[]; return: Address[]; payload: Uint8Array }) {
  try {
    const e = f()
    return { ok: true, onward: e.onward.map((a) => a.text), return: e.return.map((a) => a.text), payload: Buffer.from(e.payload).toString('hex') }
  } catch (err) {
    return { ok: false, code: isThroughlineError(err) ? err.code : 'not a ThroughlineError', message: (err as Error).message }
  }
}

// ---- tests --------------------------------------------------------------------------------------

t.test('encodeHead is byte-identical to msgpackr pack({ o, r })', async (t) => {
  fc.assert(
    fc.property(routeArb(20), routeArb(20), fc.integer({ min: 0, max: 8 }), (o, r, reserve) => {
      const fast = encodeHead(o, r, reserve).subarray(reserve)
      const ref = refEncodeHead(o, r, reserve).subarray(reserve)
      return fast.equals(ref)
    }),
    { numRuns: 3000 },
  )
  // array16 lengths (16 and more hops), and long headers (2- and 3-byte varints)
  const many = Array.from({ length: 70 }, (_, i) => new Address(i % 5, `n${i}-${'x'.repeat(200)}`))
  for (const [o, r] of [
    [many.slice(0, 16), many.slice(0, 15)],
    [many.slice(0, 15), many.slice(0, 16)],
    [many, many],
    [[], []],
  ] as const) {
    t.ok(encodeHead(o, r).equals(refEncodeHead(o, r)), `${o.length}/${r.length} hops`)
  }
})

t.test('encodeHeadFrom(onward, start) equals encodeHead(onward.slice(start))', async (t) => {
  fc.assert(
    fc.property(routeArb(10), routeArb(5), fc.nat(12), (o, r, start) => encodeHeadFrom(o, start, r, 4).subarray(4).equals(encodeHead(o.slice(start), r, 4).subarray(4))),
    { numRuns: 1000 },
  )
  t.pass()
})

t.test('an encode cache gives the same bytes as no cache, hit or miss', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(routeArb(4), routeArb(3)), { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(fc.nat(), fc.nat(3), fc.integer({ min: 0, max: 6 })), { minLength: 1, maxLength: 30 }),
      (pool, picks) => {
        const cache = createEncodeCache()
        for (const [i, start, reserve] of picks) {
          const [o, r] = pool[i % pool.length]!
          const a = encodeHeadFrom(o, start, r, reserve, cache).subarray(reserve)
          if (!a.equals(refEncodeHead(o.slice(start), r))) return false
          // with a reserve, the head is the caller's: scribbling on it must not reach the cache;
          // without one it may be the cached head itself, shared and never to be modified
          if (reserve > 0) a.fill(0xee)
        }
        return true
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

t.test('decodeEnvelope equals the msgpackr decoder on valid envelopes', async (t) => {
  fc.assert(
    fc.property(routeArb(20), routeArb(20), fc.uint8Array({ maxLength: 40 }), (o, r, payload) => {
      const frame = encodeEnvelope(o, r, payload)
      const a = outcome(() => decodeEnvelope(frame))
      t.strictSame(a, outcome(() => refDecode(frame)))
      // texts round-trip unless they hold lone surrogates (msgpackr then decodes U+FFFD, on both paths)
      const wellFormed = [...o, ...r].every((x) => (x.text as string & { isWellFormed(): boolean }).isWellFormed())
      if (wellFormed) t.strictSame(a, { ok: true, onward: o.map((x) => x.text), return: r.map((x) => x.text), payload: Buffer.from(payload).toString('hex') })
      // and through a decode cache: miss, then hit
      const cache = createDecodeCache()
      t.strictSame(outcome(() => decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache)), a)
      t.strictSame(outcome(() => decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache)), a)
    }),
    { numRuns: 300 },
  )
})

t.test('decodeEnvelope gives the same result or error as the msgpackr decoder on corrupted frames', async (t) => {
  const limits = [DEFAULT_CODEC_LIMITS, { maxHeaderSize: 64, maxRouteLength: 2 }]
  let errors = 0
  fc.assert(
    fc.property(
      routeArb(6),
      routeArb(6),
      fc.uint8Array({ maxLength: 8 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }),
      fc.constantFrom(...limits),
      fc.boolean(),
      (o, r, payload, edits, lim, truncate) => {
        let frame = Buffer.from(encodeEnvelope(o, r, payload))
        for (const [pos, byte] of edits) frame[pos % frame.length] = byte
        if (truncate) frame = frame.subarray(0, edits[0]![0] % (frame.length + 1))
        const ref = outcome(() => refDecode(frame, lim))
        if (!ref.ok) errors++
        const cache = createDecodeCache()
        return (
          JSON.stringify(outcome(() => decodeEnvelope(frame, lim))) === JSON.stringify(ref) &&
          JSON.stringify(outcome(() => decodeEnvelope(frame, lim, cache))) === JSON.stringify(ref) &&
          JSON.stringify(outcome(() => decodeEnvelope(frame, lim, cache))) === JSON.stringify(ref)
        )
      },
    ),
    { numRuns: 5000 },
  )
  t.ok(errors > 500, `corruptions exercised the error paths (${errors} errors)`)
})

t.test('hand-made headers: other map shapes, key orders and string forms decode as msgpackr does', async (t) => {
  const env = (headerHex: string): Buffer => {
    const h = Buffer.from(headerHex, 'hex')
    return Buffer.concat([Buffer.from([1, h.length]), h, Buffer.from('cafe', 'hex')])
  }
  const cases = [
    '82a16f91a3302361a17290', // fixmap
    'de0002a16f91a3302361a17290', // map16
    '82a17290a16f91a3302361', // r before o
    '83a16f91a3302361a17290a17890', // an extra key
    '82a16f91d903302361a17290', // str8 for a short string
    '82a16f91da0003302361a17290', // str16
    '82a16fdc0001a3302361a17290', // array16 of 1
    '82a16fdd00000001a3302361a17290', // array32
    '82a16f91a0a17290', // empty address
    '82a16f91a23023a17290', // empty value
    '82a16f91a3c3a961a17290', // non-ASCII (é)
    '82a16f91a3ffff61a17290', // invalid UTF-8
    '82a16f91a478233031a17290', // bad type
    '82a16f91a3302361a17290c0', // trailing byte
    '82a16f91a3302361a172', // truncated
    '82a16f92a3302361a17290', // array longer than its items
    '82a16f90a17291a3302362', // return route only
    '82a16f9101a17290', // number in route
    '81a16f90', // no r
    '90', // not a map
  ]
  for (const hex of cases) {
    const frame = env(hex)
    t.strictSame(outcome(() => decodeEnvelope(frame)), outcome(() => refDecode(frame)), hex)
    const cache = createDecodeCache()
    decodeEnvelope(encodeEnvelope([new Address(0, 'a')], [], new Uint8Array(0)), DEFAULT_CODEC_LIMITS, cache)
    t.strictSame(outcome(() => decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache)), outcome(() => refDecode(frame)), `${hex} (cache)`)
  }
})

t.test('a decode cache is per limits and never returns shared arrays', async (t) => {
  const o = [new Address(0, 'a'), new Address(0, 'b'), new Address(0, 'c')]
  const frame = encodeEnvelope(o, [new Address(1, '127.0.0.1:1')], Buffer.from('x'))
  const cache = createDecodeCache()
  const e1 = decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache)
  const e2 = decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache)
  t.not(e1.onward, e2.onward)
  t.not(e1.return, e2.return)
  e2.onward.pop()
  t.equal(decodeEnvelope(frame, DEFAULT_CODEC_LIMITS, cache).onward.length, 3)
  t.throws(() => decodeEnvelope(frame, { maxHeaderSize: 1024, maxRouteLength: 2 }, cache), { code: 'ERR_ROUTE_TOO_LONG' })
})
