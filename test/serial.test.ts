// The serial transport: COBS and CRC-32C vectors, the framing layer (hex literals, split at every
// offset, every rejection reason counted, limits), an in-memory line with injected corruption,
// and real pseudo-terminal pairs made by socat with the real serialport binding (the compliance
// suite, 1,000 × 1 KiB, unplug and replug).
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { EventEmitter } from 'node:events'
import { Duplex } from 'node:stream'
import { Node, Address, silentLogger, route, type DropEvent } from '../src/router/index.ts'
import {
  SerialTransport,
  SerialFrameDecoder,
  SerialFrameEncoder,
  cobsEncode,
  cobsDecode,
  cobsMaxEncodedLength,
  crc32c,
  type ConnectionEvent,
  type SerialListener,
  type SerialRejectReason,
  type SerialTransportOptions,
} from '../src/transports/index.ts'
import { keepPollerInterest } from '../src/transports/serial.ts'
import { openSerialPort } from '../src/transports/index.ts'
import { transportCompliance } from './compliance/transport.ts'
import { ptyPair, type PtyPair } from './helpers/pty.ts'
import { sleep, until } from './helpers/wait.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')


/** A seeded PRNG (mulberry32): the corruption tests are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const seq = (from: number, to: number): Buffer => Buffer.from(Array.from({ length: to - from + 1 }, (_, i) => (from + i) & 0xff))

// ---------------------------------------------------------------- COBS and CRC-32C

t.test('COBS: the examples of Cheshire and Baker (as on Wikipedia), both ways', async (t) => {
  const vectors: [string, Buffer, Buffer][] = [
    ['empty', hex(''), hex('01')],
    ['00', hex('00'), hex('01 01')],
    ['00 00', hex('00 00'), hex('01 01 01')],
    ['00 11 00', hex('00 11 00'), hex('01 02 11 01')],
    ['11 22 00 33', hex('11 22 00 33'), hex('03 11 22 02 33')],
    ['11 22 33 44', hex('11 22 33 44'), hex('05 11 22 33 44')],
    ['11 00 00 00', hex('11 00 00 00'), hex('02 11 01 01 01')],
    ['01..FE (254 bytes)', seq(0x01, 0xfe), Buffer.concat([hex('ff'), seq(0x01, 0xfe)])],
    ['00..FE (255 bytes)', seq(0x00, 0xfe), Buffer.concat([hex('01 ff'), seq(0x01, 0xfe)])],
    ['01..FF (255 bytes)', seq(0x01, 0xff), Buffer.concat([hex('ff'), seq(0x01, 0xfe), hex('02 ff')])],
    ['02..FF 00 (255 bytes)', Buffer.concat([seq(0x02, 0xff), hex('00')]), Buffer.concat([hex('ff'), seq(0x02, 0xff), hex('01 01')])],
    ['03..FF 00 01 (255 bytes)', Buffer.concat([seq(0x03, 0xff), hex('00 01')]), Buffer.concat([hex('fe'), seq(0x03, 0xff), hex('02 01')])],
  ]
  for (const [name, raw, encoded] of vectors) {
    const e = cobsEncode(raw)
    t.equal(e.toString('hex'), encoded.toString('hex'), `encode ${name}`)
    t.ok(e.length <= cobsMaxEncodedLength(raw.length), `${name}: within the length bound`)
    t.equal(e.indexOf(0), -1, `${name}: no 0x00 in the encoding`)
    t.equal(cobsDecode(encoded)?.toString('hex'), raw.toString('hex'), `decode ${name}`)
  }
  // malformed encodings are refused, not thrown on
  t.equal(cobsDecode(hex('')), undefined, 'empty')
  t.equal(cobsDecode(hex('05 11 22')), undefined, 'block past the end')
  t.equal(cobsDecode(hex('03 11 00')), undefined, '0x00 inside')
  t.equal(cobsDecode(hex('02 11 00 01')), undefined, 'code 0x00')
  // round trips of random data, including long zero-free runs
  const rnd = prng(1)
  for (let i = 0; i < 300; i++) {
    const n = Math.floor(rnd() * 1200)
    const b = Buffer.alloc(n)
    const zeros = rnd() < 0.3 ? 0 : rnd() * 0.2
    for (let k = 0; k < n; k++) b[k] = rnd() < zeros ? 0 : 1 + Math.floor(rnd() * 255)
    const e = cobsEncode(b)
    if (e.indexOf(0) >= 0 || e.length > cobsMaxEncodedLength(n) || !cobsDecode(e)!.equals(b)) {
      t.fail(`round trip of ${n} bytes`)
      return
    }
  }
  t.pass('300 random round trips')
})

t.test('CRC-32C: check value and known vectors', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'check value of "123456789"')
  t.equal(crc32c(hex('')), 0x00000000, 'empty')
  t.equal(crc32c(Buffer.alloc(32, 0x00)), 0x8a9136aa, '32 bytes of 00 (RFC 3720 B.4)')
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 bytes of FF (RFC 3720 B.4)')
  t.equal(crc32c(seq(0x00, 0x1f)), 0x46dd794e, '00..1F (RFC 3720 B.4)')
  t.equal(crc32c(seq(0x00, 0x1f).reverse()), 0x113fdb5c, '1F..00 (RFC 3720 B.4)')
  const b = Buffer.from('The quick brown fox jumps over the lazy dog, twice over the lazy dog')
  for (let cut = 0; cut <= b.length; cut++) {
    if (crc32c(b, cut, b.length, crc32c(b, 0, cut)) !== crc32c(b)) {
      t.fail(`chained at ${cut}`)
      return
    }
  }
  t.pass('chaining equals one pass at every cut')
})

// ---------------------------------------------------------------- framing

t.test('framing: hex literals of the wire format', async (t) => {
  const enc = new SerialFrameEncoder({ mtu: 4 })
  // message 0 "hi": raw 01 00 0000 00000002 00000000 6869 | crc f6969537
  t.equal(enc.encode(Buffer.from('hi')).toString('hex'), hex('00 02 01 01 01 01 01 01 02 02 01 01 01 07 6869 f6969537 00').toString('hex'), '"hi" as message 0')
  // message 1: the heartbeat (an empty message)
  t.equal(enc.encode().toString('hex'), hex('00 02 01 01 02 01 01 01 01 01 01 01 01 05 ee2fb725 00').toString('hex'), 'heartbeat as message 1')
  // message 2 "abcdef" with an MTU of 4: "abcd" at offset 0, "ef" at offset 4
  t.equal(
    enc.encode(Buffer.from('abc'), Buffer.from('def')).toString('hex'),
    hex('00  02 01 01 02 02 01 01 02 06 01 01 01 09 61626364 3829be7a 00  02 01 01 02 02 01 01 02 06 01 01 08 04 6566 78886bb8 00').toString('hex'),
    'two fragments (the message given in two parts)',
  )
  t.equal(enc.encodeClose().toString('hex'), hex('00 03 01 01 01 01 01 01 01 01 01 01 01 05 8d6096ac 00').toString('hex'), 'close frame')
  // the raw frame under the COBS of the first: version, kind, id, total, offset, fragment, CRC
  const raw = cobsDecode(hex('02 01 01 01 01 01 01 02 02 01 01 01 07 6869 f6969537'))!
  t.equal(raw.toString('hex'), hex('01 00 0000 00000002 00000000 6869 f6969537').toString('hex'))
  t.equal(crc32c(raw, 0, raw.length - 4), raw.readUInt32BE(raw.length - 4), 'the CRC covers header and fragment')
})

/** The frames of an encoded message, each as `00 frame 00`. */
function framesOf(encoded: Buffer): Buffer[] {
  const out: Buffer[] = []
  let start = 0
  for (let i = 0; i < encoded.length; i++) {
    if (encoded[i] !== 0) continue
    if (i > start) out.push(Buffer.concat([hex('00'), encoded.subarray(start, i), hex('00')]))
    start = i + 1
  }
  return out
}

function collect(options: ConstructorParameters<typeof SerialFrameDecoder>[1] = {}): { d: SerialFrameDecoder; got: string[]; rejects: SerialRejectReason[] } {
  const got: string[] = []
  const rejects: SerialRejectReason[] = []
  const d = new SerialFrameDecoder(
    {
      onMessage: (m) => got.push(Buffer.from(m).toString('latin1')),
      onClose: () => got.push('<close>'),
      onReject: (r) => rejects.push(r),
    },
    options,
  )
  return { d, got, rejects }
}

t.test('framing: split at every offset and one byte at a time', async (t) => {
  const enc = new SerialFrameEncoder({ mtu: 8 })
  const long = 'A fragmented message of more than three frames; with zeros \u0000\u0000 inside.'
  const stream = Buffer.concat([
    hex('13 37 c0 ff ee'), // garbage before the first delimiter (one rejected frame)
    enc.encode(Buffer.from('first')),
    enc.encode(),
    enc.encode(Buffer.from(long, 'latin1')),
    hex('00 00 00'), // idle fill
    enc.encode(Buffer.from('x')),
    enc.encodeClose(),
    enc.encode(Buffer.from('after close')),
  ])
  const expected = ['first', '', long, 'x', '<close>', 'after close']
  for (let cut = 0; cut <= stream.length; cut++) {
    const { d, got } = collect({ mtu: 8 })
    d.push(stream.subarray(0, cut))
    d.push(stream.subarray(cut))
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      t.same(got, expected, `split at ${cut}`)
      return
    }
  }
  t.pass(`split at each of ${stream.length + 1} offsets`)
  for (let a = 0; a < stream.length; a += 7) {
    for (let b = a; b <= stream.length; b += 5) {
      const { d, got } = collect({ mtu: 8 })
      d.push(stream.subarray(0, a))
      d.push(stream.subarray(a, b))
      d.push(stream.subarray(b))
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        t.same(got, expected, `split at ${a} and ${b}`)
        return
      }
    }
  }
  t.pass('split in three at many pairs of offsets')
  const { d, got, rejects } = collect({ mtu: 8 })
  for (const b of stream) d.push(Buffer.from([b]))
  t.same(got, expected, 'one byte at a time')
  t.same(rejects, ['cobs'], 'only the leading garbage was rejected')
  t.equal(d.stats.messages, 5)
  t.equal(d.stats.closes, 1)
  t.equal(d.buffered, 0, 'nothing held at the end')
})

t.test('framing: every rejection reason is counted, and the stream goes on', async (t) => {
  const mtu = 16
  const enc = new SerialFrameEncoder({ mtu })
  const ok = (s: string): Buffer => enc.encode(Buffer.from(s))
  /** A frame with the given raw bytes (CRC appended unless `crc` is given). */
  const frame = (raw: Buffer, crc?: number): Buffer => {
    const c = Buffer.alloc(4)
    c.writeUInt32BE(crc ?? crc32c(raw))
    return Buffer.concat([hex('00'), cobsEncode(Buffer.concat([raw, c])), hex('00')])
  }
  const header = (version: number, kind: number, id: number, total: number, offset: number): Buffer => {
    const h = Buffer.alloc(12)
    h[0] = version
    h[1] = kind
    h.writeUInt16BE(id, 2)
    h.writeUInt32BE(total, 4)
    h.writeUInt32BE(offset, 8)
    return h
  }
  const good = ok('good')
  const flipped = Buffer.from(good)
  flipped[flipped.indexOf('g')]! ^= 0x10 // a bit flip inside the fragment
  const cases: [string, Buffer, SerialRejectReason | undefined][] = [
    ['bit flip', flipped, 'crc'],
    ['wrong CRC', frame(Buffer.concat([header(1, 0, 900, 1, 0), hex('41')]), 0x12345678), 'crc'],
    ['truncated COBS block', hex('00 09 11 22 00'), 'cobs'],
    ['too short for header and CRC', hex('00 05 11 22 33 44 00'), 'length'],
    ['longer than the MTU allows', Buffer.concat([hex('00'), Buffer.alloc(200, 0x55), hex('00')]), 'length'],
    ['total over maxMessageSize', frame(Buffer.concat([header(1, 0, 901, 1_000_001, 0), Buffer.alloc(16, 1)])), 'length'],
    ['version 2', frame(Buffer.concat([header(2, 0, 902, 1, 0), hex('41')])), 'version'],
    ['unknown kind', frame(Buffer.concat([header(1, 7, 903, 1, 0), hex('41')])), 'header'],
    ['fragment past total', frame(Buffer.concat([header(1, 0, 904, 2, 1), hex('41 42')])), 'header'],
    ['empty fragment of a non-empty message', frame(header(1, 0, 905, 5, 0)), 'header'],
    ['close frame with a body', frame(Buffer.concat([header(1, 1, 0, 0, 0), hex('41')])), 'header'],
    ['orphan fragment (its first was lost)', frame(Buffer.concat([header(1, 0, 906, 20, 16), hex('41 42 43 44')])), 'sequence'],
  ]
  for (const [name, bytes, reason] of cases) {
    const { d, got, rejects } = collect({ mtu, maxMessageSize: 1_000_000 })
    d.push(Buffer.concat([ok('before'), bytes, ok('after')]))
    t.same(got, ['before', 'after'], `${name}: the good messages around it arrive`)
    t.same(rejects, reason === undefined ? [] : [reason], `${name}: rejected as ${reason}`)
    t.equal(d.stats.rejected[reason!], 1, `${name}: counted`)
  }
  // a missing middle fragment: the partial message is dropped when the next fragment does not fit
  {
    const { d, got, rejects } = collect({ mtu: 4 })
    const e4 = new SerialFrameEncoder({ mtu: 4 })
    const msg = e4.encode(Buffer.from('0123456789ab'))
    // the three frames of the message, each with the leading delimiter split off
    const frames = framesOf(msg)
    t.equal(frames.length, 3)
    d.push(Buffer.concat([frames[0]!, frames[2]!, e4.encode(Buffer.from('next'))]))
    t.same(got, ['next'])
    t.same(rejects, ['sequence'], 'the gap is counted once')
    t.equal(d.partialMessages, 0, 'the partial message is gone')
  }
})

t.test('framing: limits hold before anything is allocated; time-outs and overflow are counted', async (t) => {
  // garbage without a delimiter: bounded memory, counted as discarded
  {
    const { d, got, rejects } = collect({ mtu: 64 })
    const rnd = prng(7)
    const garbage = Buffer.alloc(1 << 20)
    for (let i = 0; i < garbage.length; i++) garbage[i] = 1 + Math.floor(rnd() * 255)
    for (let i = 0; i < garbage.length; i += 4096) {
      d.push(garbage.subarray(i, i + 4096))
      if (d.buffered > 64 + 16) t.fail('the frame buffer grew past its limit')
    }
    t.same(rejects, ['length'], 'one over-long frame')
    t.ok(d.stats.discardedBytes > garbage.length - 200, `${d.stats.discardedBytes} bytes discarded up to the next delimiter`)
    const enc = new SerialFrameEncoder({ mtu: 64 })
    d.push(enc.encode(Buffer.from('resynchronised')))
    t.same(got, ['resynchronised'])
  }
  // random bytes with zeros: never throws, never holds more than the limits
  {
    const { d } = collect({ mtu: 32, maxMessageSize: 4096, maxReassemblyBytes: 8192, maxPartialMessages: 2 })
    const rnd = prng(8)
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(Math.floor(rnd() * 200))
      for (let k = 0; k < b.length; k++) b[k] = rnd() < 0.05 ? 0 : Math.floor(rnd() * 256)
      d.push(b)
      if (d.buffered > 8192 + 48) t.fail('over the reassembly budget')
    }
    t.pass('2000 random chunks: no throw, within limits')
  }
  const mtu = 8
  const parts = (e: SerialFrameEncoder, s: string): Buffer[] => framesOf(e.encode(Buffer.from(s)))
  // reassembly timeout (with an injected clock)
  {
    let now = 0
    const { d, got, rejects } = collect({ mtu, reassemblyTimeout: 1000, now: () => now })
    const e = new SerialFrameEncoder({ mtu })
    const p = parts(e, 'sixteen bytes!!!')
    d.push(p[0]!)
    t.equal(d.partialMessages, 1)
    t.equal(d.buffered, 16, 'the message buffer, allocated once its total was checked')
    now = 999
    d.expire()
    t.equal(d.partialMessages, 1, 'not yet')
    now = 1999
    d.refresh() // e.g. reading resumed after a pause
    now = 2500
    d.expire()
    t.equal(d.partialMessages, 1, 'the pause did not count')
    now = 3000
    d.expire()
    t.same(rejects, ['reassembly-timeout'])
    t.equal(d.buffered, 0, 'freed')
    d.push(p[1]!)
    t.same(rejects, ['reassembly-timeout', 'sequence'], 'its late fragment is an orphan')
    t.same(got, [])
  }
  // the partial-message cap and the byte budget evict the oldest partial messages
  {
    const { d, got, rejects } = collect({ mtu, maxPartialMessages: 2, maxReassemblyBytes: 40, maxMessageSize: 100 })
    const e = new SerialFrameEncoder({ mtu })
    const a = parts(e, 'aaaaaaaaaaaa') // 12 bytes, 2 frames
    const b = parts(e, 'bbbbbbbbbbbb')
    const c = parts(e, 'cccccccccccc')
    d.push(Buffer.concat([a[0]!, b[0]!, c[0]!])) // a third partial: the oldest (a) goes
    t.same(rejects, ['overflow'])
    d.push(Buffer.concat([a[1]!, c[1]!, b[1]!]))
    t.same(got, ['cccccccccccc', 'bbbbbbbbbbbb'], 'interleaved messages are reassembled')
    t.same(rejects, ['overflow', 'sequence'])
    const big = parts(e, 'x'.repeat(41)) // over the whole budget: refused at its first fragment
    d.push(big[0]!)
    t.same(rejects, ['overflow', 'sequence', 'overflow'])
    t.equal(d.buffered, 0, 'nothing allocated for it')
    const tooBig = parts(new SerialFrameEncoder({ mtu }), 'y'.repeat(101))
    d.push(tooBig[0]!)
    t.same(rejects.at(-1), 'length', 'total over maxMessageSize')
  }
  t.throws(() => new SerialFrameEncoder({ mtu: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => collect({ mtu: 65_537 }), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('framing: one bit flip in each of k frames loses exactly those k messages', async (t) => {
  const rnd = prng(42)
  const enc = new SerialFrameEncoder({ mtu: 256 })
  const { d, got } = collect({ mtu: 256 })
  const sent: string[] = []
  const bad = new Set<number>()
  const chunks: Buffer[] = []
  for (let i = 0; i < 500; i++) {
    const s = `${i}:${'x'.repeat(Math.floor(rnd() * 200))}`
    sent.push(s)
    const f = Buffer.from(enc.encode(Buffer.from(s, 'latin1')))
    if (rnd() < 0.1) {
      // flip a bit of a byte inside the frame, keeping it non-zero (a delimiter stays a delimiter)
      for (;;) {
        const at = 1 + Math.floor(rnd() * (f.length - 2))
        const v = f[at]! ^ (1 << Math.floor(rnd() * 8))
        if (v !== 0) {
          f[at] = v
          break
        }
      }
      bad.add(i)
    }
    chunks.push(f)
  }
  const all = Buffer.concat(chunks)
  for (let i = 0; i < all.length; i += 333) d.push(all.subarray(i, i + 333))
  const rejected = Object.values(d.stats.rejected).reduce((a, b) => a + b, 0)
  t.equal(got.length, 500 - bad.size, `${bad.size} messages lost`)
  t.same(got, sent.filter((_, i) => !bad.has(i)), 'the others intact and in order')
  t.equal(rejected, bad.size, `every loss counted (${JSON.stringify(d.stats.rejected)})`)
})

// ---------------------------------------------------------------- in-memory line with corruption

/** One end of an in-memory serial line: a byte duplex whose writes reach the other end. */
class MemoryPort extends Duplex {
  other!: MemoryPort
  /** Applied to every chunk this end writes (noise on the line). */
  noise: ((chunk: Buffer) => Buffer) | undefined
  /** Line speed in bytes per second (a real line: a pty has none); default unlimited. */
  rate: number | undefined
  #waiting: (() => void) | undefined

  static pair(): [MemoryPort, MemoryPort] {
    const a = new MemoryPort()
    const b = new MemoryPort()
    a.other = b
    b.other = a
    return [a, b]
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.rate !== undefined) {
      // 64-byte slices, each after the time the line takes to carry it
      const slices: Buffer[] = []
      for (let i = 0; i < chunk.length; i += 64) slices.push(chunk.subarray(i, i + 64))
      const next = (): void => {
        const s = slices.shift()
        if (s === undefined) return cb()
        setTimeout(() => {
          if (!this.other.destroyed) this.other.push(s)
          next()
        }, (s.length / this.rate!) * 1000)
      }
      next()
      return
    }
    setImmediate(() => {
      const bytes = this.noise !== undefined ? this.noise(chunk) : chunk
      if (this.other.destroyed) return cb()
      if (this.other.push(bytes)) cb()
      else this.other.#waiting = cb
    })
  }

  override _read(): void {
    const cb = this.#waiting
    this.#waiting = undefined
    cb?.()
  }
}

/** Noise at `rate` per byte: bit flips, dropped bytes, duplicated bytes and bursts of garbage. */
function noise(rate: number, rnd: () => number, tally: Record<string, number>): (chunk: Buffer) => Buffer {
  return (chunk) => {
    const out: number[] = []
    for (const x of chunk) {
      if (rnd() >= rate) {
        out.push(x)
        continue
      }
      const kind = Math.floor(rnd() * 4)
      if (kind === 0) {
        out.push(x ^ (1 << Math.floor(rnd() * 8)))
        tally.flip = (tally.flip ?? 0) + 1
      } else if (kind === 1) {
        tally.drop = (tally.drop ?? 0) + 1
      } else if (kind === 2) {
        out.push(x, x)
        tally.duplicate = (tally.duplicate ?? 0) + 1
      } else {
        out.push(x)
        const n = 1 + Math.floor(rnd() * 32)
        for (let k = 0; k < n; k++) out.push(Math.floor(rnd() * 256))
        tally.garbage = (tally.garbage ?? 0) + 1
      }
    }
    return Buffer.from(out)
  }
}

async function memoryNodes(t: Test, options: SerialTransportOptions = {}) {
  const [pa, pb] = MemoryPort.pair()
  const ports = new Map<string, Duplex>([['/mem/a', pa], ['/mem/b', pb]])
  const openPort = (path: string): Duplex => {
    const p = ports.get(path)
    if (p === undefined) throw new Error(`no such port ${path}`)
    return p
  }
  const x = await new Node({ name: 'x', logger: silentLogger }).start()
  const y = await new Node({ name: 'y', logger: silentLogger }).start()
  const xt = new SerialTransport(x, { ...options, openPort })
  const yt = new SerialTransport(y, { ...options, openPort })
  x.addTransport(xt)
  y.addTransport(yt)
  t.teardown(async () => {
    await x.stop()
    await y.stop()
  })
  return { x, y, xt, yt, pa, pb }
}

t.test('in-memory line at 1 corrupted byte per 1,000: what arrives is intact, the rest is counted, the link goes on', async (t) => {
  const { x, y, xt, yt, pa } = await memoryNodes(t)
  const xl = await xt.listen('/mem/a')
  const yl = await yt.listen('/mem/b', { allow: ['sink'] })
  const rnd = prng(2024)
  const sent = new Map<number, Buffer>()
  const got: Buffer[] = []
  const bad: number[] = []
  y.startWorker('sink', {
    handleMessage: (_c, m) => {
      const b = Buffer.from(m.payload)
      const i = b.readUInt32BE(0)
      if (!sent.get(i)?.equals(b)) bad.push(i)
      got.push(b)
    },
  })
  const closed: ConnectionEvent[] = []
  y.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
  x.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
  const tally: Record<string, number> = {}
  pa.noise = noise(1 / 1000, rnd, tally)
  const N = 2000
  const message = (i: number): Buffer => {
    const b = Buffer.alloc(4 + Math.floor(rnd() * 700))
    for (let k = 4; k < b.length; k++) b[k] = Math.floor(rnd() * 256)
    b.writeUInt32BE(i, 0)
    sent.set(i, b)
    return b
  }
  const dest = [new Address(3, '/mem/a'), ...route('sink')]
  for (let i = 0; i < N; i++) x.send(dest, message(i))
  // the noisy phase is over once everything has left x and y has been quiet for a while
  const xconn = xl.connection!
  await until(() => xconn.counters.framesOut === N && pa.writableLength === 0, 20_000, 'all written')
  let last = -1
  await until(() => {
    const settled = last === got.length
    last = got.length
    return settled
  }, 20_000, 'y settles')
  const noisy = got.length
  const rejected = Object.values(yl.stats.rejected).reduce((a, b) => a + b, 0)
  t.comment(`noise ${JSON.stringify(tally)}; delivered ${noisy}/${N}; rejected ${JSON.stringify(yl.stats.rejected)}; discarded ${yl.stats.discardedBytes} B`)
  t.same(bad, [], 'every delivered message is intact')
  t.ok(noisy < N, 'the noise cost some messages')
  t.ok(noisy > N * 0.5, `most arrived (${noisy})`)
  t.ok(yl.stats.rejected.crc > 0, 'CRC failures counted')
  t.ok(rejected >= 10, `rejections counted (${rejected})`)
  t.equal(new Set(got.map((b) => b.readUInt32BE(0))).size, got.length, 'no message twice')
  // the line goes quiet-clean: the same link carries everything again
  pa.noise = undefined
  const before = got.length
  for (let i = N; i < N + 200; i++) x.send(dest, message(i))
  await until(() => got.length === before + 200, 10_000, 'the clean messages')
  t.same(got.slice(before).map((b) => b.readUInt32BE(0)), Array.from({ length: 200 }, (_, i) => N + i), 'all 200 clean messages, in order')
  t.same(bad, [], 'still intact')
  t.same(closed, [], 'no connection closed: the link kept going')
  t.equal(yl.connection, yt.connectionTo('/mem/b'), 'the listened port routes through its connection')
})

t.test('in-memory line: routes to a listened port use its connection; a closed session starts anew on the same port', async (t) => {
  const { x, y, xt, yt } = await memoryNodes(t)
  y.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  x.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const xl = await xt.listen('/mem/a', { allow: ['echo'] })
  const yl = await yt.listen('/mem/b', { allow: ['echo'] })
  const r1 = await x.request([new Address(3, '/mem/a'), ...route('echo')], Buffer.from('x to y'))
  t.equal(Buffer.from(r1.payload).toString(), 'x to y')
  const r2 = await y.request([new Address(3, '/mem/b'), ...route('echo')], Buffer.from('y to x'))
  t.equal(Buffer.from(r2.payload).toString(), 'y to x')
  t.equal(xt.connections().length, 1, 'x has one connection: its listened port')
  t.equal(await xt.connect('/mem/a'), xl.connection, 'connect() to a listened port gives its connection')
  await t.rejects(xt.listen('/mem/a'), { code: 'ERR_SERIAL_PORT_IN_USE' })
  await t.rejects(xt.listen('dev/ttyS0'), { code: 'ERR_LISTEN_FAILED' })
  // x ends its session: y's ends too (close frame); both start a new one on the same ports
  const first = { x: xl.connection!, y: yl.connection! }
  first.x.close()
  await until(() => first.y.closed, 2000, "y's session to end")
  await until(() => xl.connection !== undefined && yl.connection !== undefined, 2000, 'new sessions')
  t.not(xl.connection, first.x, 'x: a new connection')
  t.not(yl.connection, first.y, 'y: a new connection')
  t.equal(xl.opens, 1, 'the port was not reopened')
  const r3 = await x.request([new Address(3, '/mem/a'), ...route('echo')], Buffer.from('again'))
  t.equal(Buffer.from(r3.payload).toString(), 'again')
  // a message over the frame limit is dropped at the sender; a dial of an unknown port fails
  const drops: DropEvent[] = []
  x.on('drop', (e: DropEvent) => drops.push(e))
  x.send([new Address(3, '/mem/nowhere'), ...route('echo')], Buffer.from('x'))
  await until(() => drops.length === 1, 2000, 'drop')
  t.equal(drops[0]!.error?.code, 'ERR_CONNECTION_REFUSED')
  x.send([new Address(3, 'not-a-path'), ...route('echo')], Buffer.from('x'))
  await until(() => drops.length === 2, 2000, 'drop')
  t.equal(drops[1]!.error?.code, 'ERR_TRANSPORT_ADDRESS')
})

t.test('in-memory line throttled to 115200 baud: a message longer on the wire than the reassembly timeout arrives', async (t) => {
  // the timeout runs from a partial message's last fragment, not from its first
  const { x, y, xt, yt, pa } = await memoryNodes(t, { reassemblyTimeout: 100 })
  pa.rate = 115_200 / 10 // 8N1: ten bits a byte
  await xt.listen('/mem/a')
  const yl = await yt.listen('/mem/b', { allow: ['sink'] })
  const got: Buffer[] = []
  y.startWorker('sink', { handleMessage: (_c, m) => void got.push(Buffer.from(m.payload)) })
  const big = Buffer.alloc(4096)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
  const started = Date.now()
  x.send([new Address(3, '/mem/a'), ...route('sink')], big)
  x.send([new Address(3, '/mem/a'), ...route('sink')], Buffer.from('after'))
  await until(() => got.length === 2, 5000, 'both messages')
  const ms = Date.now() - started
  t.ok(ms >= 300, `${ms} ms on the wire: over 3 reassembly timeouts`)
  t.ok(got[0]!.equals(big), '4 KiB intact')
  t.equal(got[1]!.toString(), 'after')
  t.equal(Object.values(yl.stats.rejected).reduce((a, b) => a + b, 0), 0, 'nothing rejected or timed out')
})

t.test('in-memory line: a slow reader pauses the line, and backpressure reaches the sender', async (t) => {
  const { x, y, xt, yt, pa, pb } = await memoryNodes(t, { mtu: 64 })
  await xt.listen('/mem/a')
  await yt.listen('/mem/b', { allow: ['sink'] })
  let pauses = 0
  let drains = 0
  pb.on('pause', () => pauses++)
  pa.on('drain', () => drains++)
  const got: number[] = []
  y.startWorker(
    'sink',
    {
      handleMessage: async (_c, m) => {
        if (got.length % 100 === 0) await sleep(5)
        got.push(Buffer.from(m.payload).readUInt32BE(0))
      },
    },
    { mailboxCapacity: 4 },
  )
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.alloc(300)
    b.writeUInt32BE(i, 0)
    x.send([new Address(3, '/mem/a'), ...route('sink')], b)
  }
  await until(() => got.length === 2000, 20_000, '2000 messages')
  t.same(got, Array.from({ length: 2000 }, (_, i) => i), 'all, in order')
  t.equal(y.dropCount(), 0, 'no drops')
  t.ok(pauses > 0, `the reader paused its port (${pauses} times)`)
  t.ok(drains > 0, `the sender's port filled up and drained (${drains} times)`)
})

t.test('serialport poller work-around: every poll asks for all the events someone waits for', async (t) => {
  // @serialport/bindings-cpp 13 restarts libuv polling with only the event just asked for; a
  // write waiting for "writable" then loses its interest when a read asks for "readable" (and
  // the other way round), and waits for an event of the other kind (seen as 10 s stalls over
  // a pty under load, until the peer's next heartbeat). This is the shape of its Poller.
  class FakePoller extends EventEmitter {
    polled: number[] = []
    poll(flag = 0): void {
      this.polled.push(flag)
    }
    override once(event: string, f: (...args: unknown[]) => void): this {
      this.poll(event === 'readable' ? 1 : event === 'writable' ? 2 : 4)
      return super.once(event, f)
    }
  }
  const poller = new FakePoller()
  keepPollerInterest({ poller })
  poller.once('readable', () => {})
  poller.once('writable', () => {})
  t.same(poller.polled, [1, 3], 'the write asks for writable and, as a read waits, readable too')
  poller.emit('writable')
  poller.poll(0) // the binding re-arms after an event
  t.same(poller.polled.at(-1), 1, 'the waiting read stays armed')
  poller.emit('readable')
  poller.once('readable', () => {})
  t.same(poller.polled.at(-1), 1)
  keepPollerInterest(undefined)
  keepPollerInterest({})
  t.pass('a binding without a poller (Windows) is left alone')
})

// ---------------------------------------------------------------- real pseudo-terminals (socat)

t.test('compliance: serial over socat pty pairs, real serialport binding', async (t) => {
  const root = t.testdir()
  const pairs = new Map<SerialListener, PtyPair>()
  const all: PtyPair[] = []
  t.teardown(async () => {
    for (const p of all) await p.stop()
  })
  let n = 0
  await transportCompliance(t, {
    name: 'serial',
    pointToPoint: true,
    maxPayload: 64 * 1024,
    make: (node, options) => {
      const tr = new SerialTransport(node, options)
      node.addTransport(tr)
      return tr
    },
    listen: async (tr, o) => {
      // the pairs of earlier subtests are done with: one socat per subtest
      for (const p of all) await p.stop()
      const pair = await ptyPair(join(root, `pair${++n}`))
      all.push(pair)
      const l = await (tr as SerialTransport).listen(pair.a, o)
      pairs.set(l, pair)
      return l
    },
    addressOf: (l) => new Address(3, pairs.get(l as SerialListener)!.b),
  })
})

t.test('socat pty at 115200 baud: 1,000 messages of 1 KiB arrive intact', async (t) => {
  const pair = await ptyPair(t.testdir())
  t.teardown(() => pair.stop())
  const x = await new Node({ name: 'x', logger: silentLogger }).start()
  const y = await new Node({ name: 'y', logger: silentLogger }).start()
  t.teardown(async () => {
    await x.stop()
    await y.stop()
  })
  // the real binding, with the poller work-around in place
  const probe = (await openSerialPort(pair.a, 115_200)) as Duplex & { port?: { poller?: object }; close(cb: () => void): void }
  const poller = probe.port?.poller as { poll: unknown } | undefined
  t.ok(poller !== undefined && poller.poll !== Object.getPrototypeOf(poller).poll, 'the port poller asks for every awaited event')
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  const xt = new SerialTransport(x, { baudRate: 115_200 })
  const yt = new SerialTransport(y, { baudRate: 115_200 })
  x.addTransport(xt)
  y.addTransport(yt)
  await xt.listen(pair.a)
  const yl = await yt.listen(pair.b, { allow: ['sink'] })
  const got: Buffer[] = []
  y.startWorker('sink', { handleMessage: (_c, m) => void got.push(Buffer.from(m.payload)) })
  const rnd = prng(115200)
  const sent: Buffer[] = []
  const started = Date.now()
  for (let i = 0; i < 1000; i++) {
    const b = Buffer.alloc(1024)
    for (let k = 0; k < b.length; k++) b[k] = Math.floor(rnd() * 256)
    b.writeUInt32BE(i, 0)
    sent.push(b)
    x.send([new Address(3, pair.a), ...route('sink')], b)
  }
  await until(() => got.length === 1000, 20_000, '1000 messages')
  t.comment(`1000 × 1 KiB in ${Date.now() - started} ms (a pty ignores the baud rate)`)
  t.ok(got.every((b, i) => b.equals(sent[i]!)), 'all intact, in order')
  t.equal(Object.values(yl.stats.rejected).reduce((a, b) => a + b, 0), 0, 'nothing rejected on a clean line')
})

t.test('unplug and replug: the ports come back by themselves and carry messages again', async (t) => {
  const dir = t.testdir()
  let pair = await ptyPair(dir)
  t.teardown(() => pair.stop())
  const x = await new Node({ name: 'x', logger: silentLogger }).start()
  const y = await new Node({ name: 'y', logger: silentLogger }).start()
  t.teardown(async () => {
    await x.stop()
    await y.stop()
  })
  // a hung-up pty can read as end-of-file without an error: the device check notices it goes
  const opts = { reconnectInitialDelay: 20, reconnectMaxDelay: 200, presenceInterval: 100 }
  const xt = new SerialTransport(x, opts)
  const yt = new SerialTransport(y, opts)
  x.addTransport(xt)
  y.addTransport(yt)
  // x listens on its end; y dials its end, persistently
  x.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const xl = await xt.listen(pair.a, { allow: ['echo'] })
  await yt.connect(pair.b, { persistent: true, allow: ['sink'] })
  const got: string[] = []
  y.startWorker('sink', { handleMessage: (_c, m) => void got.push(Buffer.from(m.payload).toString()) })
  const toY = [new Address(3, pair.a), ...route('sink')]
  const echo = [new Address(3, pair.b), ...route('echo')]
  for (let i = 0; i < 50; i++) x.send(toY, Buffer.from(`one ${i}`))
  t.equal(Buffer.from((await y.request(echo, Buffer.from('ping 1'))).payload).toString(), 'ping 1')
  await until(() => got.length === 50, 5000, 'the first 50')

  // unplug: the pty pair disappears
  const lost: ConnectionEvent[] = []
  x.on('connection-closed', (e: ConnectionEvent) => lost.push(e))
  y.on('connection-closed', (e: ConnectionEvent) => lost.push(e))
  await pair.stop()
  await until(() => lost.length === 2, 5000, `both ends to see the loss (${JSON.stringify(lost.map((e) => [e.peer, e.error?.message]))})`)
  t.same(lost.map((e) => e.error?.code), ['ERR_CONNECTION_CLOSED', 'ERR_CONNECTION_CLOSED'], 'both ends closed with a typed error')
  t.equal(xl.connection, undefined, 'x: no connection while unplugged')
  await sleep(300) // a few reopen attempts fail meanwhile
  t.equal(xl.opens, 1, 'not reopened while the device is absent')

  // replug: a new pty pair at the same paths
  pair = await ptyPair(dir)
  await until(() => xl.connection !== undefined && yt.connectionTo(pair.b) !== undefined, 5000, 'both ends reopened')
  t.equal(xl.opens, 2, 'x reopened its port once')
  t.ok(x.running && y.running, 'the nodes were not restarted')
  t.equal(Buffer.from((await y.request(echo, Buffer.from('ping 2'))).payload).toString(), 'ping 2', 'y reaches x again')
  for (let i = 0; i < 50; i++) x.send(toY, Buffer.from(`two ${i}`))
  await until(() => got.length === 100, 5000, 'the next 50')
  t.same(got.slice(50), Array.from({ length: 50 }, (_, i) => `two ${i}`), 'x reaches y again, in order')
})
