// The fast path of repeated headers (Node.planRoute / runPlan, used by every transport
// connection) and TCP write batching. The fast path must give exactly what route() gives:
// the same deliveries in the same order, the same drops, the same counters, and it must notice
// every change that could route a message differently (workers, forwarder routes, allow-lists).
import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { pack, unpack } from 'msgpackr'
import { Address, Node, silentLogger, local, encodeHead, decodeEnvelope, type DropEvent, type Message } from '../src/router/index.ts'
import { AllowList } from '../src/router/access.ts'
import { RelayClient, RelayService } from '../src/services/index.ts'
import { MemoryNetwork, MemoryTransport, TcpTransport, TcpLink } from '../src/transports/index.ts'
import { Connection } from '../src/transports/connection.ts'
import type { Link } from '../src/transports/types.ts'
import { DEFAULT_TCP_COALESCE_MAX_PAYLOAD } from '../src/transports/constants.ts'
import { sleep, until } from './helpers/wait.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

interface Hop {
  node: Node
  tcp: TcpTransport
}

async function tcpNode(t: Test, name: string, fastPath = true, options: ConstructorParameters<typeof TcpTransport>[1] = {}): Promise<Hop> {
  const node = await new Node({ name, logger: silentLogger, fastPath }).start()
  const tcp = new TcpTransport(node, options)
  node.addTransport(tcp)
  t.teardown(() => node.stop())
  return { node, tcp }
}

/** Relay R (relay service, listener allowing forward_to_*), device D registered as `d` with a `sink` worker, sender S. */
async function relayed(t: Test, fastPath: boolean, relayOptions: ConstructorParameters<typeof TcpTransport>[1] = {}) {
  const R = await tcpNode(t, 'R', fastPath, relayOptions)
  new RelayService(R.node)
  const rl = await R.tcp.listen('127.0.0.1:0', { allow: ['relay', 'forward_to_*'], transit: true })
  const D = await tcpNode(t, 'D', fastPath)
  const got: Message[] = []
  D.node.startWorker('sink', { handleMessage: (_ctx, m) => void got.push(m) })
  const client = new RelayClient(D.node, { relayRoute: [new Address(1, rl.address)], name: 'd', allow: ['sink'] })
  t.teardown(() => client.stop())
  const registered = once(client, 'registered')
  client.start()
  await registered
  const S = await tcpNode(t, 'S', fastPath)
  await S.tcp.connect(rl.address)
  const to = [new Address(1, rl.address), local('forward_to_d'), local('sink')]
  return { R, rl, D, S, got, client, to }
}

const payloads = (n: number, size = 64): Buffer[] =>
  Array.from({ length: n }, (_, i) => {
    const b = Buffer.alloc(size, i & 0xff)
    b.writeUInt32BE(i, 0)
    return b
  })

t.test('through a relay: every message arrives, in order, with the same counters as without the fast path', async (t) => {
  const results: { delivered: number[]; drops: number[]; order: boolean; n: number; planned: boolean }[] = []
  for (const fastPath of [false, true]) {
    const { R, D, S, got, to } = await relayed(t, fastPath)
    const before = [R.node.stats.delivered, D.node.stats.delivered]
    const list = payloads(5000)
    for (const p of list) S.node.send(to, p)
    await until(() => got.length >= list.length, 10_000, `${list.length} messages at the sink`)
    const order = got.every((m, i) => Buffer.from(m.payload).equals(list[i]!))
    results.push({
      delivered: [R.node.stats.delivered - before[0]!, D.node.stats.delivered - before[1]!],
      drops: [R.node.dropCount(), D.node.dropCount()],
      order,
      n: got.length,
      planned: fastPath,
    })
    // what the sink sees is the same message either way
    const m = got.at(-1)!
    t.equal(m.onward.length, 1, 'onward: the sink')
    t.equal(m.onward[0]!.text, '0#sink')
    t.equal(m.return.length, 2, 'return: D’s connection to R, then R’s connection to S')
    t.ok(m.local.flow !== undefined && m.local.flow.allows(local('sink')) && !m.local.flow.allows(local('other')), 'under the relay client’s allow-list')
    t.ok(m.local.producer !== undefined, 'with its producer, for backpressure')
    t.ok(Buffer.isBuffer(m.payload) && m.payload instanceof Buffer, 'its payload is a Buffer (a view of the received chunk)')
    t.equal((m.payload as Buffer).readUInt32BE(0), 4999, 'with the Buffer methods')
    t.ok((m.payload as Buffer).subarray(0, 4).equals(Buffer.from([0, 0, 0x13, 0x87])))
  }
  const [slow, fast] = results
  t.equal(fast!.n, 5000)
  t.ok(slow!.order && fast!.order, 'in order, both ways')
  t.same(fast!.delivered, slow!.delivered, 'the same delivered counts at the relay and at the device')
  t.same(fast!.drops, [0, 0])
  t.same(slow!.drops, [0, 0])
})

t.test('large messages through a relay: frames that arrive in pieces are written on as pieces, byte for byte', async (t) => {
  const { R, S, got, to } = await relayed(t, true)
  const list = Array.from({ length: 200 }, (_, i) => {
    const b = randomBytes(100 * 1024 + i)
    b.writeUInt32BE(i, 0)
    return b
  })
  // count the frames R writes on as pieces
  let asPieces = 0
  for (const c of R.tcp.connections()) {
    const link = c.link as TcpLink
    const write = link.writeFramePieces.bind(link)
    link.writeFramePieces = (...args) => {
      asPieces++
      return write(...args)
    }
  }
  const socket = (S.tcp.connections()[0]!.link as TcpLink).socket
  for (const p of list) {
    S.node.send(to, p)
    if (socket.writableNeedDrain) await once(socket, 'drain')
  }
  await until(() => got.length === list.length, 20_000, 'every large message')
  t.ok(asPieces > list.length / 2, `${asPieces} of ${list.length} written on as the pieces they came in`)
  t.ok(got.every((m, i) => Buffer.from(m.payload).equals(list[i]!)), 'all of them intact, in order')
  const planned = R.tcp.connections().reduce((n, c) => n + c.counters.planned, 0)
  t.ok(planned >= list.length - 2, `${planned} of ${list.length} relayed by the plan (as pieces, not gathered)`)
  t.equal(R.node.dropCount(), 0)
})

t.test('a plan is dropped when what it was made from changes', async (t) => {
  const { R, rl, D, S, got, client, to } = await relayed(t, true)
  // R's connection from S, and D's connection to R: how many frames took the fast path
  const planned = (): number[] => [R.tcp, D.tcp].map((tr) => tr.connections().reduce((n, c) => n + c.counters.planned, 0))
  // `slack`: frames that may take route() (while a header cannot be planned, planning is tried
  // again after 16 frames, then 32, ...: after a refusal of 20 frames the plan comes back within 48)
  const burst = async (n: number, slack = 2): Promise<void> => {
    const start = got.length
    const p0 = planned()
    for (const p of payloads(n)) S.node.send(to, p)
    await until(() => got.length >= start + n, 5000, `${n} more messages`)
    const p1 = planned()
    // the first frame after a change takes route() and plans again; the rest take the plan
    t.ok(p1[0]! - p0[0]! >= n - slack && p1[1]! - p0[1]! >= n - slack, `fast path at the relay and at the device: ${p1[0]! - p0[0]!} and ${p1[1]! - p0[1]!} of ${n}`)
  }
  await burst(50)
  t.test('the allow-list of the flow the frames come in on', async (t) => {
    const drops: DropEvent[] = []
    const onDrop = (e: DropEvent): void => void drops.push(e)
    R.node.on('drop', onDrop)
    rl.flow.remove('forward_to_*')
    for (const p of payloads(20)) S.node.send(to, p)
    await until(() => drops.length >= 20, 5000, 'the drops')
    t.same([...new Set(drops.map((d) => d.reason))], ['flow-denied'], 'every frame of the same header is refused at once')
    rl.flow.add('forward_to_*')
    R.node.off('drop', onDrop)
    await burst(100, 40)
  })
  t.test('the relay client’s allow-list (a flow set by a forwarder)', async (t) => {
    const drops: DropEvent[] = []
    const onDrop = (e: DropEvent): void => void drops.push(e)
    D.node.on('drop', onDrop)
    client.allow.remove('sink')
    const n0 = got.length
    for (const p of payloads(20)) S.node.send(to, p)
    await until(() => drops.length >= 20, 5000, 'the drops')
    t.equal(got.length, n0, 'nothing reached the sink')
    t.same([...new Set(drops.map((d) => `${d.reason} ${d.at}`))], ['flow-denied 0#sink'])
    client.allow.add('sink')
    D.node.off('drop', onDrop)
    await burst(100, 40)
  })
  t.test('the worker at the end', async (t) => {
    await D.node.stopWorker('sink')
    const drops: DropEvent[] = []
    const onDrop = (e: DropEvent): void => void drops.push(e)
    D.node.on('drop', onDrop)
    for (const p of payloads(10)) S.node.send(to, p)
    await until(() => drops.length >= 10, 5000, 'the drops')
    t.same([...new Set(drops.map((d) => d.reason))], ['no-such-address'])
    const again: Message[] = []
    D.node.startWorker('sink', { handleMessage: (_ctx, m) => void again.push(m) })
    for (const p of payloads(10)) S.node.send(to, p)
    await until(() => again.length >= 10, 5000, 'the new sink')
    D.node.off('drop', onDrop)
  })
  t.test('the registration ends when its connection closes', async (t) => {
    const drops: DropEvent[] = []
    const onDrop = (e: DropEvent): void => void drops.push(e)
    R.node.on('drop', onDrop)
    client.stop()
    for (const c of D.tcp.connections()) c.close()
    await until(() => !R.node.hasWorker('forward_to_d'), 5000, 'the registration to end')
    for (const p of payloads(10)) S.node.send(to, p)
    await until(() => drops.length >= 10, 5000, 'the drops')
    t.same([...new Set(drops.map((d) => d.reason))], ['no-such-address'])
    R.node.off('drop', onDrop)
  })
})

t.test('a forwarder’s new route takes effect for the very next frame', async (t) => {
  const R = await tcpNode(t, 'R')
  const rl = await R.tcp.listen('127.0.0.1:0', { allow: ['fw'], transit: true })
  const opened: Address[] = []
  R.node.on('connection-open', (ev: { address: Address; dialled: boolean }) => void (ev.dialled || opened.push(ev.address)))
  const sinks: Message[][] = []
  for (const name of ['D1', 'D2']) {
    const D = await tcpNode(t, name)
    const got: Message[] = []
    sinks.push(got)
    D.node.startWorker('sink', { handleMessage: (_ctx, m) => void got.push(m) })
    await D.tcp.connect(rl.address, { allow: ['sink'] })
    await until(() => opened.length === sinks.length, 5000, `${name}'s connection at R`)
  }
  const fw = R.node.startForwarder('fw', [opened[0]!])
  const S = await tcpNode(t, 'S')
  await S.tcp.connect(rl.address)
  const to = [new Address(1, rl.address), local('fw'), local('sink')]
  for (const p of payloads(100)) S.node.send(to, p)
  await until(() => sinks[0]!.length === 100, 5000, 'D1')
  fw.route = [opened[1]!]
  t.equal(fw.route[0], opened[1])
  for (const p of payloads(100)) S.node.send(to, p)
  await until(() => sinks[1]!.length === 100, 5000, 'D2')
  t.equal(sinks[0]!.length, 100, 'nothing more at D1')
  await fw.stop()
  t.notOk(R.node.hasWorker('fw'))
})

t.test('what a plan cannot cover still takes route(): predicates, oversized frames, hostile frames', async (t) => {
  t.test('an incoming predicate is asked for every message', async (t) => {
    const D = await tcpNode(t, 'D')
    const got: number[] = []
    D.node.startWorker('sink', { handleMessage: (_ctx, m) => void got.push(m.payload[3]!) }, { incoming: (m) => m.payload[3]! % 2 === 0 })
    const l = await D.tcp.listen('127.0.0.1:0', { allow: ['sink'] })
    const S = await tcpNode(t, 'S')
    for (const p of payloads(100)) S.node.send([new Address(1, l.address), local('sink')], p)
    await until(() => D.node.dropCount('incoming-denied') === 50, 5000, '50 refusals')
    t.equal(got.length, 50)
    t.ok(got.every((x) => x % 2 === 0))
  })
  t.test('a frame that would be too large on the way out is dropped, counted, every time', async (t) => {
    // the relay's frames grow by the registered route and its connection's address
    const { R, S, got, to } = await relayed(t, true, { maxFrameSize: 400 })
    const small = payloads(20, 100)
    const big = payloads(20, 330) // in: 363 bytes; out: 418
    for (let i = 0; i < 20; i++) {
      S.node.send(to, small[i]!)
      S.node.send(to, big[i]!)
    }
    await until(() => got.length >= 20 && R.node.dropCount('frame-too-large') >= 20, 5000, 'the small ones and the drops')
    t.equal(got.length, 20)
    t.ok(got.every((m) => m.payload.length === 100))
    t.equal(R.node.dropCount('frame-too-large'), 20)
  })
  t.test('a bad frame after a planned stream still closes the connection with its typed error', async (t) => {
    const D = await tcpNode(t, 'D')
    let n = 0
    D.node.startWorker('sink', { handleMessage: () => void n++ })
    const l = await D.tcp.listen('127.0.0.1:0', { allow: ['sink'] })
    const drops: DropEvent[] = []
    D.node.on('drop', (e: DropEvent) => drops.push(e))
    const head = encodeHead([local('sink')], [])
    const frame = (h: Buffer, body: Buffer): Buffer => {
      const f = Buffer.alloc(4 + h.length + body.length)
      f.writeUInt32BE(h.length + body.length, 0)
      h.copy(f, 4)
      body.copy(f, 4 + h.length)
      return f
    }
    const good = frame(head, Buffer.from('hello'))
    const badVersion = Buffer.from(good)
    badVersion[4] = 9
    const sock = net.connect({ host: '127.0.0.1', port: Number(l.address.split(':')[1]) })
    await once(sock, 'connect')
    sock.resume() // read (and drop) what the node sends, so that its close is seen
    const closed = once(sock, 'close')
    sock.write(Buffer.concat([hex('01'), good, good, good, badVersion, good]))
    await until(() => drops.length > 0, 5000, 'the drop')
    t.equal(n, 3, 'three delivered, none after the bad frame')
    t.equal(drops[0]!.reason, 'decode-error')
    t.equal(drops[0]!.error?.code, 'ERR_UNSUPPORTED_VERSION')
    await closed
  })
})

t.test('backpressure through a planned relay hop: a stalled receiver pauses the sender, nothing is lost', async (t) => {
  const { R, D, S, got, to } = await relayed(t, true)
  // stall D: its connection to R stops reading, so R's writes to it back up
  const dConn = D.tcp.connections()[0]!
  dConn.pause()
  const socket = (S.tcp.connections()[0]!.link as TcpLink).socket
  const list = payloads(20_000, 1024)
  let i = 0
  // send as TCP takes them; stop once TCP holds the sender back
  while (i < list.length) {
    S.node.send(to, list[i++]!)
    if (socket.writableNeedDrain) {
      const stalled = await Promise.race([once(socket, 'drain').then(() => false), sleep(300).then(() => true)])
      if (stalled) break
    }
  }
  t.ok(i < list.length, `the sender was held back by TCP flow control after ${i} messages`)
  t.ok(
    R.tcp.connections().some((c) => (c.link as TcpLink).socket.isPaused()),
    'the relay paused reading from the sender',
  )
  dConn.resume()
  while (i < list.length) {
    S.node.send(to, list[i++]!)
    if (socket.writableNeedDrain) await once(socket, 'drain')
  }
  await until(() => got.length === list.length, 20_000, 'every message at the sink')
  t.ok(
    got.every((m, k) => Buffer.from(m.payload).equals(list[k]!)),
    'all of them, in order',
  )
  t.equal(R.node.dropCount() + D.node.dropCount(), 0)
})

t.test('planRoute: what it plans and what it leaves to route()', async (t) => {
  const network = new MemoryNetwork()
  const node = await new Node({ name: 'p', logger: silentLogger }).start()
  t.teardown(() => node.stop())
  node.addTransport(new MemoryTransport(node, { network }))
  node.startWorker('w', { handleMessage: () => {} })
  node.startWorker('guarded', { handleMessage: () => {} }, { incoming: () => true })
  const flow = new AllowList('test', ['w', 'fw', 'guarded'])
  const withFlow = { flow }
  const plan = node.planRoute([local('w')], [], withFlow)
  t.ok(plan, 'a worker reached directly')
  t.ok(Object.isFrozen(plan!.onward) && Object.isFrozen(plan!.return) && Object.isFrozen(plan!.local), 'routes and metadata its messages share are frozen')
  t.equal(node.planRoute([local('guarded')], [], withFlow), undefined, 'a worker with an incoming predicate')
  t.equal(node.planRoute([local('nobody')], [], withFlow), undefined, 'no such worker')
  t.equal(node.planRoute([new Address(4, 'elsewhere'), local('w')], [], withFlow), undefined, 'a transport address first')
  t.equal(node.planRoute([local('w')], [], { flow: { id: 'x', transit: false, allows: () => true } }), undefined, 'a flow without a version')
  t.equal(node.planRoute([local('w')], [], { flow: new AllowList('none') }), undefined, 'a flow that refuses')
  t.equal(node.planRoute([], [], withFlow), undefined, 'an empty route')
  const fw = node.startForwarder('fw', [local('w')])
  const p2 = node.planRoute([local('fw')], [], withFlow)
  t.ok(p2, 'through a forwarder')
  t.equal(p2!.forwarders.length, 1)
  t.equal(p2!.local.flow, undefined, 'the forwarder ends the flow')
  const loop = node.startForwarder('loop', [local('loop')])
  t.equal(node.planRoute([local('loop')], [], {}), undefined, 'a forwarding loop is not planned')
  await loop.stop()
  const ended = node.startForwarder('end', [], { onEnd: () => {} })
  t.equal(node.planRoute([local('end')], [], {}), undefined, 'a message that ends at a forwarder')
  await ended.stop()
  const buf = Buffer.from('xyz')
  t.ok(node.runPlan(p2!, buf, 0, 3), 'other workers started and stopped since: the plan still holds')
  const p3 = node.planRoute([local('fw')], [], withFlow)!
  t.ok(node.runPlan(p3, buf, 0, 3), 'a fresh plan runs')
  fw.route = [local('guarded')]
  t.notOk(node.planHolds(p3), 'a forwarder’s new route makes it stale')
  t.notOk(node.runPlan(p3, buf, 0, 3), 'and it runs no more')
  fw.route = [local('w')]
  t.notOk(node.planHolds(p3), 'even when set back to the same addresses (a plan is not re-checked, it is made again)')
  node.startWorker('w2', { handleMessage: () => {} })
  const p6 = node.planRoute([local('w2')], [], {})!
  t.ok(node.planHolds(p6))
  await node.stopWorker('w2')
  t.notOk(node.planHolds(p6), 'its worker stopped: stale')
  node.startWorker('w2', { handleMessage: () => {} })
  t.notOk(node.planHolds(p6), 'a new worker at the same address is another worker: still stale')
  const p4 = node.planRoute([local('w')], [], withFlow)!
  flow.add('other')
  t.notOk(node.runPlan(p4, buf, 0, 3), 'a changed allow-list makes it stale')
  const off = await new Node({ name: 'off', logger: silentLogger, fastPath: false }).start()
  off.startWorker('w', { handleMessage: () => {} })
  t.equal(off.planRoute([local('w')], [], {}), undefined, 'fastPath: false plans nothing')
  await off.stop()
  const p5 = node.planRoute([local('w')], [], withFlow)!
  await node.stop()
  t.notOk(node.runPlan(p5, buf, 0, 3), 'a stopped node runs no plan')
})

t.test('AllowList.version changes with every change', async (t) => {
  const a = new AllowList('a', ['x'])
  const v0 = a.version
  a.add('y')
  t.ok(a.version > v0)
  const v1 = a.version
  a.remove('y')
  t.ok(a.version > v1)
  const v2 = a.version
  a.transit = true
  t.ok(a.version > v2)
  t.equal(a.transit, true)
  const v3 = a.version
  a.transit = true
  t.equal(a.version, v3, 'setting the same value is no change')
})

t.test('TCP write batching', async (t) => {
  // a raw peer that records what arrives
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => void server.close())
  const port = (server.address() as net.AddressInfo).port
  const received: Buffer[] = []
  let peer: net.Socket | undefined
  server.on('connection', (s) => {
    peer = s
    s.on('data', (d: Buffer) => received.push(d))
  })
  const socket = net.connect({ host: '127.0.0.1', port })
  await once(socket, 'connect')
  await until(() => peer !== undefined, 2000, 'the accept')
  const writes: Uint8Array[] = []
  const write = socket.write.bind(socket) as (chunk: Uint8Array) => boolean
  socket.write = ((chunk: Uint8Array) => {
    writes.push(chunk)
    return write(chunk)
  }) as typeof socket.write
  const link = new TcpLink(socket, 1 << 20)
  t.equal(link.coalesceMaxPayload, DEFAULT_TCP_COALESCE_MAX_PAYLOAD)
  await sleep(0)
  t.same(writes, [hex('01')], 'the connection version first')
  writes.length = 0
  const head = hex('01 03 aabbcc')
  const big = Buffer.alloc(DEFAULT_TCP_COALESCE_MAX_PAYLOAD + 1, 0x42)
  link.writeFrame(head, hex('0102'))
  link.writeHeartbeat()
  link.writeFrame(head, big)
  link.writeFrameRange(head, hex('ff 0304 ff'), 1, 3)
  t.equal(writes.length, 2, 'within the turn only what a payload over the limit needs: the batch before it, then the payload')
  t.equal(writes[1], big, 'the large payload is written as it is (zero-copy)')
  await sleep(0)
  t.equal(writes.length, 3, 'at the end of the turn, the rest of the batch')
  const expected = Buffer.concat([
    hex('00000007 01 03 aabbcc 0102'),
    hex('00000000'), // heartbeat
    hex(`${(5 + big.length).toString(16).padStart(8, '0')} 01 03 aabbcc`),
    big,
    hex('00000007 01 03 aabbcc 0304'),
  ])
  await until(() => Buffer.concat(received).length >= 1 + expected.length, 2000, 'the bytes')
  t.same(Buffer.concat(received), Buffer.concat([hex('01'), expected]), 'byte for byte, after the connection version')
  // many frames in one turn: one write per 16 KiB, not one per frame
  writes.length = 0
  for (let i = 0; i < 1000; i++) link.writeFrame(head, Buffer.alloc(64))
  await sleep(0)
  t.ok(writes.length <= 6, `1000 frames of 73 bytes in ${writes.length} writes`)
  // a quiet connection lets go of its batch; writing begins a new one
  await sleep(50)
  received.length = 0
  link.trim()
  link.writeHeartbeat()
  link.writeFrame(head, hex('0506'))
  await until(() => Buffer.concat(received).length >= 15, 2000, 'the bytes after trim')
  t.same(Buffer.concat(received), hex('00000000 00000007 01 03 aabbcc 0506'), 'a heartbeat and a frame after trim()')
  // an orderly close sends what was written before it
  await sleep(50)
  received.length = 0
  link.writeFrame(head, hex('7777'))
  link.close()
  await once(peer!, 'end')
  t.same(Buffer.concat(received).subarray(-11), hex('00000007 01 03 aabbcc 7777'), 'the last frame arrived before the end')
  const n = await new Node({ logger: silentLogger }).start()
  t.throws(() => new TcpTransport(n, { coalesceMaxPayload: -1 }), { code: 'ERR_INVALID_ARGUMENT' })
  await n.stop()
})

t.test('TCP with coalesceMaxPayload 0: every payload written as it is, and it still works end to end', async (t) => {
  const D = await tcpNode(t, 'D', true, { coalesceMaxPayload: 0 })
  D.node.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const l = await D.tcp.listen('127.0.0.1:0', { allow: ['echo'] })
  const S = await tcpNode(t, 'S', true, { coalesceMaxPayload: 0 })
  for (let i = 0; i < 20; i++) {
    const r = await S.node.request([new Address(1, l.address), local('echo')], Buffer.from(`ping ${i}`))
    t.equal(Buffer.from(r.payload).toString(), `ping ${i}`)
  }
})

// ---- property: on random streams of frames and changes, the fast path gives what route() gives

/** A link that records what the connection writes, and lets the test feed it frames. */
class RecordingLink implements Link {
  readonly remote = 'test'
  out: string[] = []
  onFrame: (buf: Uint8Array, start?: number, end?: number) => void = () => {}
  onClose: () => void = () => {}
  onDrain: () => void = () => {}
  closed = false
  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    this.out.push(Buffer.concat([head, payload]).toString('hex'))
    return true
  }
  writeHeartbeat(): void {}
  pause(): void {}
  resume(): void {}
  close(): void {
    this.closed = true
  }
}

type Op =
  | { kind: 'frame'; header: number; size: number; fill: number; pad: number }
  | { kind: 'deny' | 'allow' | 'stopSink' | 'startSink' | 'moveRoute' | 'dropRegistration' | 'heartbeat' }

/** One relay-like node driven by ops; returns what it did, as text, in order. */
async function drive(ops: readonly Op[], fastPath: boolean): Promise<{ trace: string[]; planned: number }> {
  const trace: string[] = []
  const node = await new Node({ name: 'prop', logger: silentLogger, fastPath }).start()
  new RelayService(node)
  const record = (name: string) => (_ctx: unknown, m: Message): void => void trace.push(`${name} ${Buffer.from(m.payload).toString('hex')} ${m.return.map((a) => a.text).join(',')}`)
  node.startWorker('sink', { handleMessage: record('sink') })
  node.startWorker('private', { handleMessage: record('private') })
  node.on('drop', (e: DropEvent) => trace.push(`drop ${e.reason} ${e.at ?? ''}`))
  const connect = (flow: AllowList): { link: RecordingLink; conn: Connection } => {
    const link = new RecordingLink()
    const conn = new Connection(node, link, { transport: 'test', peer: 'p', dialled: false, flow, heartbeatInterval: 0, idleTimeout: 0, maxFrameSize: 1024, logger: silentLogger }).open()
    return { link, conn }
  }
  // D registers "d" through link B (return route: B's connection, then its client)
  const b = connect(new AllowList('b', ['relay'], { transit: true }))
  const register = (client: string, token?: Uint8Array): void => {
    const body: Record<string, unknown> = { op: 'register', name: 'd' }
    if (token !== undefined) body['token'] = token
    b.link.onFrame(Buffer.concat([encodeHead([local('relay')], [local(client)]), pack(body)]))
  }
  register('client1')
  const answer = unpack(decodeEnvelope(Buffer.from(b.link.out[0]!, 'hex')).payload) as { token: Uint8Array }
  b.link.out = []
  const inbound = new AllowList('a', ['forward_to_*', 'sink'], { transit: true })
  const a = connect(inbound)
  const headers = [
    encodeHead([local('forward_to_d'), local('x')], []),
    encodeHead([local('sink')], []),
    encodeHead([local('private')], []),
    encodeHead([local('nobody')], []),
    encodeHead([local('forward_to_d'), local('y')], [local('r1')]),
    encodeHead([local('sink')], [local('r2'), local('r3')]),
  ]
  for (const op of ops) {
    switch (op.kind) {
      case 'frame': {
        const env = Buffer.concat([headers[op.header % headers.length]!, Buffer.alloc(op.size, op.fill)])
        // inside a larger chunk, as TCP delivers it
        const chunk = Buffer.concat([Buffer.alloc(op.pad, 0xee), env, Buffer.alloc(3, 0xdd)])
        a.link.onFrame(chunk, op.pad, op.pad + env.length)
        break
      }
      case 'heartbeat':
        a.link.onFrame(Buffer.alloc(8), 4, 4)
        break
      case 'deny':
        inbound.remove('forward_to_*')
        break
      case 'allow':
        inbound.add('forward_to_*')
        break
      case 'stopSink':
        await node.stopWorker('sink')
        break
      case 'startSink':
        if (!node.hasWorker('sink')) node.startWorker('sink', { handleMessage: record('sink2') })
        break
      case 'moveRoute':
        register(`client${trace.length}`, answer.token) // renewal with the token from another return route
        break
      case 'dropRegistration':
        await node.stopWorker('forward_to_d')
        break
    }
    for (const f of b.link.out) trace.push(`to D ${f}`)
    b.link.out = []
  }
  trace.push(`a closed: ${a.link.closed}`)
  await node.stop()
  // connection addresses and the registration token are random: the same names for them in both runs
  const names: [string, string][] = [
    [a.conn.address.value, '<A>'],
    [Buffer.from(a.conn.address.value).toString('hex'), '<A>'],
    [b.conn.address.value, '<B>'],
    [Buffer.from(b.conn.address.value).toString('hex'), '<B>'],
    [Buffer.from(answer.token).toString('hex'), '<token>'],
  ]
  return { trace: trace.map((line) => names.reduce((l, [id, name]) => l.replaceAll(id, name), line)), planned: a.conn.counters.planned }
}

t.test('property: on random streams of frames and changes, the fast path gives what route() gives', async (t) => {
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 12, arbitrary: fc.record({ kind: fc.constant('frame' as const), header: fc.nat(5), size: fc.nat(1100), fill: fc.nat(255), pad: fc.nat(9) }) },
    { weight: 1, arbitrary: fc.constantFrom<Op>({ kind: 'deny' }, { kind: 'allow' }, { kind: 'stopSink' }, { kind: 'startSink' }, { kind: 'moveRoute' }, { kind: 'dropRegistration' }, { kind: 'heartbeat' }) },
  )
  // runs of the same frame, so that plans are made and used
  const ops = fc.array(fc.tuple(op, fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 40 }).map((xs) => xs.flatMap(([o, n]) => new Array<Op>(o.kind === 'frame' ? n : 1).fill(o)))
  let planned = 0
  let frames = 0
  await fc.assert(
    fc.asyncProperty(ops, async (list) => {
      const slow = await drive(list, false)
      const fast = await drive(list, true)
      t.equal(slow.planned, 0)
      planned += fast.planned
      frames += list.filter((o) => o.kind === 'frame').length
      if (JSON.stringify(slow.trace) !== JSON.stringify(fast.trace)) {
        t.same(fast.trace, slow.trace, 'the fast path’s trace is the slow path’s')
        return false
      }
      return true
    }),
    { numRuns: 300 },
  )
  t.ok(planned > frames / 4, `the fast path took ${planned} of ${frames} frames`)
  t.pass('300 random streams gave the same deliveries, writes, drops and closes')
})
