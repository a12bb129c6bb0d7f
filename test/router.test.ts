// Router: addresses, route syntax, the envelope codec (hex-literal wire tests), the Node runtime
// (delivery, access control, mailboxes, request/response, drops, ordered shutdown).
import t from 'tap'
import fc from 'fast-check'
import { pack } from 'msgpackr'
import {
  Address,
  AllowList,
  Node,
  address,
  decodeEnvelope,
  encodeEnvelope,
  encodeHead,
  local,
  parseAddress,
  parseRoute,
  parseRouteSegments,
  printRoute,
  route,
  silentLogger,
  lineLogger,
  type Message,
  type DropEvent,
} from '../src/router/index.ts'
import { isThroughlineError } from '../src/errors.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const newNode = async (name = 'n'): Promise<Node> => new Node({ name, logger: silentLogger }).start()

t.test('addresses', async (t) => {
  const a = parseAddress('1#127.0.0.1:4000')
  t.equal(a.type, 1)
  t.equal(a.value, '127.0.0.1:4000')
  t.equal(a.text, '1#127.0.0.1:4000')
  t.equal(parseAddress('echo').text, '0#echo', 'a bare name is local')
  t.ok(address('0#x').equals(local('x')))
  for (const bad of ['x#y', '256#a', '1#', '', '-1#a']) {
    t.throws(() => parseAddress(bad), { code: 'ERR_ADDRESS_SYNTAX' }, `rejects "${bad}"`)
  }
  t.throws(() => new Address(0, 'x'.repeat(256)), { code: 'ERR_ADDRESS_SYNTAX' }, 'value length limit')
})

t.test('route text syntax', async (t) => {
  const r = parseRoute('/tcp/127.0.0.1:4000/service/forward_to_d/service/echo')
  t.same(r.map((a) => a.text), ['1#127.0.0.1:4000', '0#forward_to_d', '0#echo'])
  t.equal(printRoute(r), '/tcp/127.0.0.1:4000/service/forward_to_d/service/echo')
  t.same(parseRoute('/tcp/[::1]:4000/ws/h.example:443/wss/h:1/memory/m/serial/dev/ttyUSB0/service/echo').map((a) => a.text), [
    '1#[::1]:4000',
    '2#h.example:443',
    '2#wss:h:1',
    '4#m',
    '3#/dev/ttyUSB0',
    '0#echo',
  ])
  t.same(parseRoute('/addr/9#thing').map((a) => a.text), ['9#thing'])
  const cases: [string, RegExp][] = [
    ['tcp/1.2.3.4:5', /must start with/],
    ['/tcpp/1.2.3.4:5', /segment 1 .*unknown protocol "tcpp"/],
    ['/tcp/127.0.0.1:4000/service', /segment 2 .*"\/service" needs a value/],
    ['/tcp/127.0.0.1:99999', /segment 1 .*not HOST:PORT/],
    ['/tcp/localhost', /segment 1 .*not HOST:PORT/],
    ['/service/echo/bogus/x', /segment 2 .*unknown protocol "bogus"/],
    ['/', /unknown protocol ""/],
  ]
  for (const [text, re] of cases) {
    t.throws(() => parseRoute(text), { code: 'ERR_ROUTE_SYNTAX', message: re }, text)
  }
  t.equal(parseRouteSegments('/service/a').length, 1)
})

t.test('route print/parse round trip (property)', async (t) => {
  const name = fc.stringMatching(/^[A-Za-z0-9_.-]{1,20}$/)
  const hostPort = fc.tuple(fc.stringMatching(/^[a-z0-9.-]{1,15}$/), fc.integer({ min: 0, max: 65535 })).map(([h, p]) => `${h}:${p}`)
  const addr = fc.oneof(
    name.map((n) => new Address(0, n)),
    hostPort.map((v) => new Address(1, v)),
    hostPort.map((v) => new Address(2, v)),
    hostPort.map((v) => new Address(2, `wss:${v}`)),
    name.map((n) => new Address(4, n)),
    fc.tuple(fc.integer({ min: 5, max: 255 }), name).map(([ty, n]) => new Address(ty, n)),
  )
  fc.assert(
    fc.property(fc.array(addr, { minLength: 1, maxLength: 10 }), (r) => {
      const back = parseRoute(printRoute(r))
      return back.length === r.length && back.every((a, i) => a.text === r[i]!.text)
    }),
    { numRuns: 300 },
  )
  t.pass('300 random routes round-trip')
})

t.test('envelope wire format (hex literals)', async (t) => {
  // u8 version | varint header length | msgpack map16 {o: ['0#echo'], r: ['0#a']} | payload 'hi'
  const wire = hex(`01 14
    de 00 02 a1 6f 91 a6 30 23 65 63 68 6f
       a1 72 91 a3 30 23 61
    68 69`)
  const enc = encodeEnvelope([local('echo')], [local('a')], Buffer.from('hi'))
  t.equal(enc.toString('hex'), wire.toString('hex'), 'encodes to the documented bytes')
  const dec = decodeEnvelope(wire)
  t.same(dec.onward.map((a) => a.text), ['0#echo'])
  t.same(dec.return.map((a) => a.text), ['0#a'])
  t.equal(Buffer.from(dec.payload).toString(), 'hi')
  t.equal(dec.payload.buffer, wire.buffer, 'payload is a view into the frame, not a copy')
  // the head leaves room for a transport prefix
  const head = encodeHead([local('echo')], [local('a')], 4)
  t.equal(head.subarray(4).toString('hex'), wire.subarray(0, 22).toString('hex'))
  // empty payload and empty return route
  t.equal(encodeEnvelope([local('x')], [], new Uint8Array(0)).toString('hex'), '010dde0002a16f91a3302378a17290')
  // a 2-byte varint header length
  const long = route(Array.from({ length: 30 }, (_, i) => `0#hop-${i}`))
  const e2 = encodeEnvelope(long, [], Buffer.from('p'))
  t.equal(e2[1]! & 0x80, 0x80, 'header length uses two varint bytes')
  t.equal(decodeEnvelope(e2).onward.length, 30)
})

t.test('envelope decoding rejects bad input with typed errors', async (t) => {
  const cases: [string, Buffer, string][] = [
    ['too short', hex('01'), 'ERR_MALFORMED_ENVELOPE'],
    ['wrong version', hex('02 01 80'), 'ERR_UNSUPPORTED_VERSION'],
    ['truncated varint', hex('01 80'), 'ERR_MALFORMED_ENVELOPE'],
    ['varint too long', hex('01 ff ff ff 01'), 'ERR_HEADER_TOO_LARGE'],
    ['header over limit', hex('01 ff ff 01 00'), 'ERR_HEADER_TOO_LARGE'],
    ['header past end', hex('01 10 80'), 'ERR_MALFORMED_ENVELOPE'],
    ['zero header', hex('01 00 80'), 'ERR_MALFORMED_ENVELOPE'],
    ['not msgpack', hex('01 01 c1'), 'ERR_MALFORMED_ENVELOPE'],
    ['header not a map', hex('01 01 90'), 'ERR_MALFORMED_ENVELOPE'],
    ['o not an array', Buffer.concat([hex('01 07'), pack({ o: 1, r: [] })]), 'ERR_MALFORMED_ENVELOPE'],
    ['address not a string', Buffer.concat([hex('01 08'), pack({ o: [1], r: [] })]), 'ERR_MALFORMED_ENVELOPE'],
    ['bad address', Buffer.concat([hex('01 0b'), pack({ o: ['x#y'], r: [] })]), 'ERR_MALFORMED_ENVELOPE'],
  ]
  for (const [name, buf, code] of cases) t.throws(() => decodeEnvelope(buf), { code }, name)
  const many = Array.from({ length: 65 }, () => '0#a')
  const h = pack({ o: many, r: [] })
  const frame = Buffer.concat([Buffer.from([1, (h.length & 0x7f) | 0x80, h.length >> 7]), h])
  t.throws(() => decodeEnvelope(frame), { code: 'ERR_ROUTE_TOO_LONG' }, 'route over the hop limit')
})

t.test('envelope decoder never throws anything but typed errors (fuzz)', async (t) => {
  const valid = encodeEnvelope(route('0#a', '1#127.0.0.1:1'), route('0#b'), Buffer.from('payload'))
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: valid.length - 1 }), fc.integer({ min: 0, max: 255 }), (bytes, pos, val) => {
      for (const input of [Buffer.from(bytes), Buffer.from(valid).fill(val, pos, pos + 1)]) {
        try {
          decodeEnvelope(input)
        } catch (err) {
          if (!isThroughlineError(err)) return false
        }
      }
      return true
    }),
    { numRuns: 2000 },
  )
  t.pass('2000 random and mutated envelopes')
})

t.test('node delivers by onward route; hop rule on forward', async (t) => {
  const node = await newNode()
  t.teardown(() => node.stop())
  const seen: Message[] = []
  node.startWorker('b', { handleMessage: (_c, m) => void seen.push(m) })
  node.startWorker(['a', 'a2'], {
    handleMessage: (ctx, m) => ctx.forward(m), // pops itself
  })
  node.send(route('a', 'b'), Buffer.from('x'), { returnRoute: route('r') })
  node.send(route('a2', 'b'), Buffer.from('y'))
  t.equal(seen.length, 2)
  t.same(seen[0]!.onward.map((a) => a.text), ['0#b'])
  t.same(seen[0]!.return.map((a) => a.text), ['0#r'])
  t.throws(() => node.startWorker('b', { handleMessage: () => {} }), { code: 'ERR_ADDRESS_IN_USE' })
  t.throws(() => node.startWorker('1#x:1', { handleMessage: () => {} }), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('drops are counted, logged and emitted with their reason', async (t) => {
  const lines: string[] = []
  const node = await new Node({ name: 'd', logger: lineLogger((l) => lines.push(l)) }).start()
  t.teardown(() => node.stop())
  const events: DropEvent[] = []
  node.on('drop', (e: DropEvent) => events.push(e))
  node.send(route('nobody'), Buffer.from('x'))
  node.send([], Buffer.from('x'))
  node.send(route('5#x'), Buffer.from('x'))
  node.startWorker('boom', { handleMessage: () => { throw new Error('bad worker') } })
  node.send(route('boom'), Buffer.from('x'))
  t.same(events.map((e) => e.reason), ['no-such-address', 'empty-route', 'no-transport', 'worker-error'])
  t.same(events.slice(0, 3).map((e) => e.error?.code), ['ERR_NO_SUCH_ADDRESS', 'ERR_ROUTE_EMPTY', 'ERR_NO_TRANSPORT'])
  t.equal(node.dropCount(), 4)
  t.equal(node.stats.drops['no-such-address'], 1)
  t.ok(lines.some((l) => l.includes('reason=no-such-address') && l.includes('0#nobody')), 'logged with reason and route')
  node.startWorker('w', { handleMessage: () => {} })
  node.send(route('w'), Buffer.from('ok'))
  t.equal(node.dropCount(), 4, 'a worker that is fine still works')
})

t.test('flow control: network input reaches only what its flow allows', async (t) => {
  const node = await newNode()
  t.teardown(() => node.stop())
  const got: string[] = []
  node.startWorker('public', { handleMessage: (_c, m) => void got.push(`public:${m.payload.length}`) })
  node.startWorker('private', { handleMessage: () => void got.push('private') })
  node.startWorker('reply', { handleMessage: () => void got.push('reply') }, { acceptsNetwork: true })
  node.startWorker('conn', { handleMessage: () => void got.push('conn') }, { layer: 'transport' })
  const flow = new AllowList('test listener', ['public', 'fw_*'])
  const fromNet = (to: string, f = flow): void => node.route({ onward: route(to), return: [], payload: Buffer.alloc(1), local: { flow: f } })
  fromNet('public')
  fromNet('private')
  fromNet('reply')
  fromNet('conn')
  fromNet('1#10.0.0.1:80')
  t.same(got, ['public:1', 'reply'])
  t.equal(node.stats.drops['flow-denied'], 3, 'private, a connection without transit, and a dial are denied')
  flow.transit = true
  fromNet('conn')
  t.same(got.at(-1), 'conn', 'transit flows may reach connections')
  flow.add('private')
  fromNet('private')
  t.same(got.at(-1), 'private', 'allow-lists change at run time')
  t.ok(new AllowList('x', ['fw_*']).allows(local('fw_abc')), 'prefix entries')
  // incoming and outgoing access control per address
  node.startWorker('guarded', { handleMessage: () => void got.push('guarded') }, { incoming: (m) => m.payload.length === 2 })
  node.send(route('guarded'), Buffer.alloc(1))
  node.send(route('guarded'), Buffer.alloc(2))
  t.equal(got.filter((g) => g === 'guarded').length, 1)
  t.equal(node.stats.drops['incoming-denied'], 1)
  const ctx = node.startWorker('out', { handleMessage: () => {} }, { outgoing: (m) => m.onward[0]!.value !== 'private' })
  ctx.send(route('private'), Buffer.alloc(1))
  t.equal(node.stats.drops['outgoing-denied'], 1)
})

t.test('mailboxes: async workers run one message at a time, in order; producers pause when full', async (t) => {
  const node = await new Node({ name: 'mb', logger: silentLogger, limits: { mailboxCapacity: 4 } }).start()
  t.teardown(() => node.stop())
  const order: number[] = []
  let active = 0
  let maxActive = 0
  node.startWorker('slow', {
    handleMessage: async (_c, m) => {
      active++
      maxActive = Math.max(maxActive, active)
      await new Promise((r) => setTimeout(r, 2))
      order.push(m.payload[0]!)
      active--
    },
  })
  let paused = 0
  let resumed = 0
  const producer = { pause: () => void paused++, resume: () => void resumed++ }
  for (let i = 0; i < 20; i++) node.route({ onward: route('slow'), return: [], payload: Buffer.from([i]), local: { producer } })
  t.equal(paused, 1, 'the producer is paused once when the mailbox fills')
  await new Promise((r) => setTimeout(r, 200))
  t.same(order, Array.from({ length: 20 }, (_, i) => i), 'in order')
  t.equal(maxActive, 1, 'one at a time')
  t.equal(resumed, 1, 'resumed after draining')
})

t.test('deep synchronous chains are queued instead of overflowing the stack', async (t) => {
  const node = await newNode()
  t.teardown(() => node.stop())
  let n = 0
  node.startWorker('ping', { handleMessage: (ctx, m) => { if (++n < 100_000) ctx.send(route('ping'), m.payload) } })
  node.send(route('ping'), Buffer.alloc(1))
  await new Promise<void>((resolve) => { const iv = setInterval(() => { if (n >= 100_000) { clearInterval(iv); resolve() } }, 5) })
  t.equal(n, 100_000)
})

t.test('request/response: reply, timeout, abort, fast failure', async (t) => {
  const node = await newNode()
  t.teardown(() => node.stop())
  node.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const r = await node.request(route('echo'), Buffer.from('ping'))
  t.equal(Buffer.from(r.payload).toString(), 'ping')
  await t.rejects(node.request(route('void'), Buffer.from('x'), { timeout: 100 }), { code: 'ERR_NO_SUCH_ADDRESS' }, 'a local drop fails the request at once')
  node.startWorker('silent', { handleMessage: () => {} })
  await t.rejects(node.request(route('silent'), Buffer.from('x'), { timeout: 50 }), { code: 'ERR_TIMEOUT' })
  const ac = new AbortController()
  const p = node.request(route('silent'), Buffer.from('x'), { signal: ac.signal })
  ac.abort()
  await t.rejects(p, { code: 'ERR_ABORTED' })
  await t.rejects(node.request(route('silent'), Buffer.from('x'), { signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' })
  const pending = node.request(route('silent'), Buffer.from('x'), { timeout: 10_000 })
  await node.stop()
  await t.rejects(pending, { code: 'ERR_STOPPED' }, 'pending requests fail on stop')
  t.throws(() => node.send(route('echo'), Buffer.alloc(0)), { code: 'ERR_NOT_STARTED' })
})

t.test('ordered shutdown: app, service, channel, transport', async (t) => {
  const node = await newNode()
  const stopped: string[] = []
  for (const layer of ['transport', 'channel', 'service', 'app'] as const) {
    node.startWorker(layer, { handleMessage: () => {}, onStop: async () => { await new Promise((r) => setTimeout(r, 5)); stopped.push(layer) } }, { layer })
  }
  // a channel worker can still send while services stop
  await node.stop()
  t.same(stopped, ['app', 'service', 'channel', 'transport'])
  t.notOk(node.running)
})
