// Transports: the compliance suite for TCP and memory, the TCP frame decoder (hex literals,
// split at every offset), and hostile input to a listening TCP port.
import t from 'tap'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { Node, Address, silentLogger, lineLogger, route, encodeHead, encodeEnvelope, local, type DropEvent } from '../src/router/index.ts'
import { FrameDecoder, MemoryTransport, MemoryNetwork, TcpTransport, type ConnectionEvent } from '../src/transports/index.ts'
import { transportCompliance } from './compliance/transport.ts'
import { sleep } from './helpers/wait.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

t.test('compliance: tcp', async (t) => {
  await transportCompliance(t, {
    name: 'tcp',
    make: (node, options) => {
      const tr = new TcpTransport(node, options)
      node.addTransport(tr)
      return tr
    },
    listen: (tr, o) => (tr as TcpTransport).listen('127.0.0.1:0', o),
    addressOf: (l) => new Address(1, l.address),
  })
})

t.test('compliance: memory', async (t) => {
  const network = new MemoryNetwork()
  let n = 0
  await transportCompliance(t, {
    name: 'memory',
    make: (node, options) => {
      const tr = new MemoryTransport(node, { ...options, network })
      node.addTransport(tr)
      return tr
    },
    listen: (tr, o) => (tr as MemoryTransport).listen(`listener-${++n}`, o),
    addressOf: (l) => new Address(4, l.address),
  })
})

t.test('frame decoder: hex literals, split at every offset', async (t) => {
  // version 01 | frame len 3 "abc" | heartbeat | frame len 1 "z"
  const stream = hex('01 00000003 616263 00000000 00000001 7a')
  const expected = ['abc', '', 'z']
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder(1024)
    const got: string[] = []
    d.push(stream.subarray(0, cut), (b, s, e) => got.push(b.subarray(s, e).toString()))
    d.push(stream.subarray(cut), (b, s, e) => got.push(b.subarray(s, e).toString()))
    t.same(got, expected, `split at ${cut}`)
  }
  const d = new FrameDecoder(1024)
  const got: string[] = []
  for (const b of stream) d.push(Buffer.from([b]), (buf, s, e) => got.push(buf.subarray(s, e).toString()))
  t.same(got, expected, 'one byte at a time')
  // a frame inside one chunk is passed as its range of the chunk: no copy, not even a view
  const ranges: [Buffer, number, number][] = []
  new FrameDecoder(1024).push(stream, (b, s, e) => ranges.push([b, s, e]))
  t.equal(ranges[0]![0], stream, 'zero-copy when contiguous')
  t.same(ranges.map(([, s, e]) => [s, e]), [[5, 8], [0, 0], [16, 17]], 'each frame’s range of the chunk (a heartbeat: an empty one)')
  t.throws(() => new FrameDecoder(1024).push(hex('02'), () => {}), { code: 'ERR_UNSUPPORTED_VERSION' })
  t.throws(() => new FrameDecoder(1024).push(hex('01 00000401'), () => {}), { code: 'ERR_FRAME_TOO_LARGE' }, 'limit checked on the length, before any body arrives')
  const partial = new FrameDecoder(1024)
  partial.push(hex('01 00000010 6162'), () => {})
  t.equal(partial.buffered, 2, 'holds only the bytes received')
})

t.test('hostile input on a TCP listener closes only that connection', async (t) => {
  const lines: string[] = []
  const node = await new Node({ name: 'victim', logger: lineLogger((l) => lines.push(l), 'victim', 'warn') }).start()
  const tcp = new TcpTransport(node, { idleTimeout: 300, heartbeatInterval: 100, maxFrameSize: 64 * 1024 })
  node.addTransport(tcp)
  node.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const listener = await tcp.listen('127.0.0.1:0', { allow: ['echo'] })
  const client = await new Node({ name: 'good', logger: silentLogger }).start()
  client.addTransport(new TcpTransport(client, { heartbeatInterval: 50 }))
  t.teardown(async () => {
    await client.stop()
    await node.stop()
  })
  const echo = [new Address(1, listener.address), local('echo')]
  const closed: ConnectionEvent[] = []
  node.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
  // a good client connected for the whole test
  t.equal(Buffer.from((await client.request(echo, Buffer.from('before'))).payload).toString(), 'before')

  const frame = (body: Buffer): Buffer => {
    const h = Buffer.alloc(4)
    h.writeUInt32BE(body.length)
    return Buffer.concat([h, body])
  }
  const tenThousandHops = encodeHead(route(Array.from({ length: 10_000 }, () => '0#a')), [])
  const cases: [string, Buffer, string][] = [
    ['random bytes', Buffer.concat([hex('01'), randomBytes(4096)]), '(ERR_FRAME_TOO_LARGE|ERR_MALFORMED_ENVELOPE|ERR_UNSUPPORTED_VERSION|ERR_HEADER_TOO_LARGE)'],
    ['wrong connection version', hex('07 00000001 00'), 'ERR_UNSUPPORTED_VERSION'],
    ['length prefix over the limit', hex('01 7fffffff'), 'ERR_FRAME_TOO_LARGE'],
    ['malformed header', Buffer.concat([hex('01'), frame(hex('01 03 c1 c1 c1'))]), 'ERR_MALFORMED_ENVELOPE'],
    ['route of 10,000 hops', Buffer.concat([hex('01'), frame(Buffer.concat([tenThousandHops, Buffer.from('x')]))]), 'ERR_HEADER_TOO_LARGE'],
    ['truncated frame, then silence', Buffer.concat([hex('01'), hex('00000100'), Buffer.alloc(10)]), 'ERR_IDLE_TIMEOUT'],
  ]
  for (const [name, bytes, code] of cases) {
    const before = closed.length
    const sock = net.connect({ host: '127.0.0.1', port: (listener as { port: number }).port })
    sock.on('error', () => {})
    sock.resume()
    const ended = new Promise<void>((resolve) => sock.on('close', () => resolve()))
    sock.write(bytes)
    await ended
    await sleep(20)
    t.equal(closed.length, before + 1, `${name}: one connection closed`)
    t.match(closed.at(-1)!.error?.code, new RegExp(`^${code}$`), `${name}: typed error ${closed.at(-1)!.error?.code}`)
    // the good client is still served
    const r = await client.request(echo, Buffer.from(name))
    t.equal(Buffer.from(r.payload).toString(), name, `${name}: others still served`)
  }
  t.ok(lines.some((l) => l.includes('ERR_FRAME_TOO_LARGE')), 'errors are logged')
  t.equal(tcp.connections().filter((c) => !c.options.dialled).length, 1, 'only the good connection remains')

  // the hop limit proper (with a header limit large enough to carry the route)
  const roomy = await new Node({ name: 'roomy', logger: silentLogger, limits: { maxHeaderSize: 200_000 } }).start()
  t.teardown(() => roomy.stop())
  const rt = new TcpTransport(roomy)
  roomy.addTransport(rt)
  const rl = await rt.listen('127.0.0.1:0', { allow: ['echo'] })
  const rclosed: ConnectionEvent[] = []
  roomy.on('connection-closed', (e: ConnectionEvent) => rclosed.push(e))
  const sock = net.connect({ host: '127.0.0.1', port: (rl as { port: number }).port })
  sock.on('error', () => {})
  sock.resume()
  sock.write(Buffer.concat([hex('01'), frame(encodeEnvelope(route(Array.from({ length: 10_000 }, () => '0#echo')), [], Buffer.from('x')))]))
  await new Promise<void>((resolve) => sock.on('close', () => resolve()))
  await sleep(20)
  t.equal(rclosed[0]?.error?.code, 'ERR_ROUTE_TOO_LONG', '10,000 hops over the route limit')
})

t.test('access control over TCP: a denied message is dropped, counted and logged', async (t) => {
  const lines: string[] = []
  const node = await new Node({ name: 'guarded', logger: lineLogger((l) => lines.push(l), 'guarded', 'warn') }).start()
  const tcp = new TcpTransport(node)
  node.addTransport(tcp)
  let reached = 0
  node.startWorker('private', { handleMessage: () => void reached++ })
  node.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const l = await tcp.listen('127.0.0.1:0', { allow: ['echo'] })
  const client = await new Node({ name: 'c', logger: silentLogger }).start()
  client.addTransport(new TcpTransport(client))
  t.teardown(async () => {
    await client.stop()
    await node.stop()
  })
  const drops: DropEvent[] = []
  node.on('drop', (e: DropEvent) => drops.push(e))
  client.send([new Address(1, l.address), local('private')], Buffer.from('x'))
  // a message asking the node to dial elsewhere is refused too
  client.send([new Address(1, l.address), new Address(1, '127.0.0.1:9'), local('x')], Buffer.from('x'))
  await client.request([new Address(1, l.address), local('echo')], Buffer.from('sync'))
  t.equal(reached, 0)
  t.same(drops.map((d) => d.reason), ['flow-denied', 'flow-denied'])
  t.equal(node.stats.drops['flow-denied'], 2)
  t.ok(lines.some((l) => l.includes('reason=flow-denied') && l.includes('does not allow 0#private')), 'logged with the reason')
})

t.test('transit: network input may use a connection that exists, never dial a new one', async (t) => {
  const mk = async (name: string) => {
    const n = await new Node({ name, logger: silentLogger }).start()
    const tr = new TcpTransport(n)
    n.addTransport(tr)
    t.teardown(() => n.stop())
    return { n, tr }
  }
  const X = await mk('X')
  X.n.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const xl = await X.tr.listen('127.0.0.1:0', { allow: ['echo'] })
  const G = await mk('G')
  const gl = await G.tr.listen('127.0.0.1:0', { transit: true })
  const C = await mk('C')
  const via = [new Address(1, gl.address), new Address(1, xl.address), local('echo')]
  const drops: DropEvent[] = []
  G.n.on('drop', (e: DropEvent) => drops.push(e))
  await t.rejects(C.n.request(via, Buffer.from('x'), { timeout: 300 }), { code: 'ERR_TIMEOUT' })
  t.match(drops[0]?.error?.message, /may not open connections/, 'no connection yet: the gateway does not dial for the network')
  await G.tr.connect(xl.address, { transit: true }) // replies come back on it, so it allows transit too
  const r = await C.n.request(via, Buffer.from('through the gateway'))
  t.equal(Buffer.from(r.payload).toString(), 'through the gateway', 'an existing connection carries transit traffic')
  gl.flow.transit = false
  await t.rejects(C.n.request(via, Buffer.from('x'), { timeout: 300 }), { code: 'ERR_TIMEOUT' })
  t.equal(drops.at(-1)?.reason, 'flow-denied', 'without transit, not even an existing connection')
})
