// WebSocket transports: the compliance suite over ws://, over wss:// (a self-signed certificate
// made at test time, pinned as CA by the client) and for the browser transport (on a
// WebSocket-compatible shim built on `ws`); hostile clients of a listener; TLS refusal;
// permessage-deflate off; backpressure through bufferedAmount.
import t, { type Test } from 'tap'
import net from 'node:net'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { WebSocket } from 'ws'
import { Node, Address, silentLogger, lineLogger, route, parseRoute, encodeEnvelope, local, type DropEvent } from '../src/router/index.ts'
import {
  BrowserWebSocketTransport,
  WebSocketTransport,
  WebSocketLink,
  WS_HIGH_WATER_MARK,
  type ConnectionEvent,
  type WebSocketListener,
} from '../src/transports/index.ts'
import { transportCompliance } from './compliance/transport.ts'
import { sleep, until } from './helpers/wait.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')

/** A self-signed P-256 certificate for 127.0.0.1 / localhost, made in a test directory. */
function makeCert(t: Test): { cert: string; key: string } {
  const dir = t.testdir()
  const keyFile = join(dir, 'k.pem')
  const certFile = join(dir, 'c.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-days', '1', '-keyout', keyFile, '-out', certFile,
  ], { stdio: 'ignore' })
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') }
}

/** A browser-like WebSocket on Node: `new WebSocket(url)` and nothing else (so it offers permessage-deflate, as browsers do). */
class ShimWebSocket extends WebSocket {
  constructor(url: string) {
    super(url)
  }
}

t.test('compliance: ws', async (t) => {
  await transportCompliance(t, {
    name: 'ws',
    make: (node, options) => {
      const tr = new WebSocketTransport(node, options)
      node.addTransport(tr)
      return tr
    },
    listen: (tr, o) => (tr as WebSocketTransport).listen('127.0.0.1:0', o),
    addressOf: (l) => new Address(2, l.address),
  })
})

t.test('compliance: wss with a pinned self-signed certificate', async (t) => {
  const { cert, key } = makeCert(t)
  await transportCompliance(t, {
    name: 'wss',
    make: (node, options) => {
      const tr = new WebSocketTransport(node, { ...options, tls: { ca: cert } })
      node.addTransport(tr)
      return tr
    },
    listen: (tr, o) => (tr as WebSocketTransport).listen('127.0.0.1:0', { ...o, tls: { cert, key } }),
    addressOf: (l) => new Address(2, (l as WebSocketListener).peer),
  })
})

t.test('compliance: browser transport (ws shim) against the Node listener', async (t) => {
  // the suite makes one transport per node: the node that listens gets the Node transport,
  // every dialling node the browser one
  await transportCompliance(t, {
    name: 'browser-ws',
    make: (node, options) => {
      const tr = node.name.endsWith('-server') ? new WebSocketTransport(node, options) : new BrowserWebSocketTransport(node, { ...options, WebSocket: ShimWebSocket })
      node.addTransport(tr)
      return tr
    },
    listen: (tr, o) => (tr as WebSocketTransport).listen('127.0.0.1:0', o),
    addressOf: (l) => new Address(2, l.address),
  })
})

/** A server node with an echo worker on a ws listener, and a well-behaved client node. */
async function echoServer(t: Test, opts: { tls?: { cert: string; key: string }; maxFrameSize?: number; idleTimeout?: number } = {}) {
  const lines: string[] = []
  const server = await new Node({ name: 'victim', logger: lineLogger((l) => lines.push(l), 'victim', 'warn') }).start()
  const st = new WebSocketTransport(server, { idleTimeout: opts.idleTimeout ?? 35_000, heartbeatInterval: 100, maxFrameSize: opts.maxFrameSize ?? 1024 * 1024 })
  server.addTransport(st)
  server.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
  const listener = await st.listen('127.0.0.1:0', { allow: ['echo'], ...(opts.tls === undefined ? {} : { tls: opts.tls }) })
  t.teardown(() => server.stop())
  return { server, st, listener, lines }
}

async function goodClient(t: Test, options: ConstructorParameters<typeof WebSocketTransport>[1] = {}) {
  const client = await new Node({ name: 'good', logger: silentLogger }).start()
  const ct = new WebSocketTransport(client, { heartbeatInterval: 50, ...options })
  client.addTransport(ct)
  t.teardown(() => client.stop())
  return { client, ct }
}

/** Opens a raw TCP connection, does the WebSocket handshake by hand, and returns the socket after the 101. */
async function rawHandshake(port: number): Promise<{ sock: net.Socket; closed: Promise<void>; received: () => Buffer }> {
  const sock = net.connect({ host: '127.0.0.1', port })
  sock.on('error', () => {})
  const chunks: Buffer[] = []
  sock.on('data', (c: Buffer) => chunks.push(c))
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()))
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()))
  sock.write(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  )
  await until(() => Buffer.concat(chunks).includes('\r\n\r\n'), 3000, 'the 101 response')
  const head = Buffer.concat(chunks).toString('latin1')
  if (!head.startsWith('HTTP/1.1 101')) throw new Error(`handshake failed: ${head.split('\r\n')[0]}`)
  return { sock, closed, received: () => Buffer.concat(chunks) }
}

/** A masked client frame (opcode, payload) as a browser or ws client would send it. */
function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4)
  const masked = Buffer.from(payload)
  for (let i = 0; i < masked.length; i++) masked[i]! ^= mask[i & 3]!
  let len: Buffer
  if (payload.length < 126) len = Buffer.from([0x80 | payload.length])
  else if (payload.length < 65536) {
    len = Buffer.alloc(3)
    len[0] = 0x80 | 126
    len.writeUInt16BE(payload.length, 1)
  } else {
    len = Buffer.alloc(9)
    len[0] = 0x80 | 127
    len.writeBigUInt64BE(BigInt(payload.length), 1)
  }
  return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode]), len, mask, masked])
}

t.test('hostile clients of a ws listener: each is closed with a typed error; others are served', async (t) => {
  const { server, st, listener, lines } = await echoServer(t, { maxFrameSize: 64 * 1024, idleTimeout: 300 })
  const { client } = await goodClient(t)
  const echo = [new Address(2, listener.address), local('echo')]
  const closed: ConnectionEvent[] = []
  server.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
  const drops: DropEvent[] = []
  server.on('drop', (e: DropEvent) => drops.push(e))
  t.equal(Buffer.from((await client.request(echo, Buffer.from('before'))).payload).toString(), 'before')
  const stillServed = async (name: string): Promise<void> => {
    const r = await client.request(echo, Buffer.from(name))
    t.equal(Buffer.from(r.payload).toString(), name, `${name}: the good client is still served`)
  }

  // ---- raw ws clients: the close code they receive tells them why
  const wsCases: [string, (ws: WebSocket) => void, string, number][] = [
    ['a message over the frame limit', (ws) => ws.send(Buffer.alloc(64 * 1024 + 1)), 'ERR_FRAME_TOO_LARGE', 1009],
    ['a fragmented message over the limit in total', (ws) => {
      ws.send(Buffer.alloc(40 * 1024), { fin: false })
      ws.send(Buffer.alloc(40 * 1024), { fin: true })
    }, 'ERR_FRAME_TOO_LARGE', 1009],
    ['a text message', (ws) => ws.send('hello'), 'ERR_WS_PROTOCOL', 1003],
    ['a malformed envelope', (ws) => ws.send(hex('01 03 c1 c1 c1')), 'ERR_MALFORMED_ENVELOPE', 1002],
    ['a route of 10,000 hops', (ws) => ws.send(encodeEnvelope(route(Array.from({ length: 10_000 }, () => '0#a')), [], Buffer.from('x'))), 'ERR_HEADER_TOO_LARGE', 1002],
    ['silence (no heartbeats)', () => {}, 'ERR_IDLE_TIMEOUT', 1001],
  ]
  for (const [name, act, code, wsCode] of wsCases) {
    const before = closed.length
    const ws = new WebSocket(`ws://${listener.address}/`, { perMessageDeflate: false })
    ws.on('error', () => {})
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const gotClose = new Promise<number>((resolve) => ws.on('close', (c: number) => resolve(c)))
    act(ws)
    t.equal(await gotClose, wsCode, `${name}: the client got close code ${wsCode}`)
    await until(() => closed.length === before + 1, 3000, `${name}: connection-closed`)
    t.equal(closed.at(-1)!.error?.code, code, `${name}: typed error ${closed.at(-1)!.error?.code}`)
    await stillServed(name)
  }
  t.ok(drops.some((d) => d.reason === 'decode-error' && d.error?.code === 'ERR_MALFORMED_ENVELOPE'), 'the malformed envelope is a decode-error drop')

  // ---- raw TCP sockets
  const port = (listener as WebSocketListener).port
  const rawCases: [string, Buffer, string][] = [
    // 0xff: FIN with RSV1-3 set and a reserved opcode
    ['garbage bytes after the handshake', Buffer.concat([hex('ff ff'), randomBytes(64)]), 'ERR_WS_PROTOCOL'],
    ['an unmasked client frame', hex('82 01 00'), 'ERR_WS_PROTOCOL'],
    ['a frame header announcing 2^40 bytes', hex('82 ff 0000010000000000 00000000'), 'ERR_FRAME_TOO_LARGE'],
    ['a continuation with nothing to continue', clientFrame(0, Buffer.from('x')), 'ERR_WS_PROTOCOL'],
  ]
  for (const [name, bytes, code] of rawCases) {
    const before = closed.length
    const { sock, closed: sockClosed } = await rawHandshake(port)
    sock.write(bytes)
    await sockClosed
    await until(() => closed.length === before + 1, 3000, `${name}: connection-closed`)
    t.equal(closed.at(-1)!.error?.code, code, `${name}: typed error ${closed.at(-1)!.error?.code}`)
    await stillServed(name)
  }

  // ---- garbage before any handshake: the HTTP layer drops the socket; no connection was made
  {
    const before = closed.length
    const sock = net.connect({ host: '127.0.0.1', port })
    sock.on('error', () => {})
    sock.resume()
    const ended = new Promise<void>((resolve) => sock.on('close', () => resolve()))
    sock.write(Buffer.concat([randomBytes(512), Buffer.from('\r\n\r\n')]))
    await ended
    t.equal(closed.length, before, 'garbage before the handshake: no connection to close')
    await stillServed('garbage before the handshake')
  }
  // a plain HTTP request is answered 426
  {
    const r = await fetch(`http://${listener.address}/`)
    t.equal(r.status, 426, 'plain HTTP: 426 Upgrade Required')
    await r.text()
  }

  t.ok(lines.some((l) => l.includes('ERR_FRAME_TOO_LARGE')) && lines.some((l) => l.includes('ERR_WS_PROTOCOL')), 'errors are logged')
  await until(() => st.connections().filter((c) => !c.options.dialled).length === 1, 3000, 'one inbound connection left')
  t.pass('only the good connection remains')
})

t.test('wss: a client that does not trust the certificate is refused with the TLS reason', async (t) => {
  const { cert, key } = makeCert(t)
  const { listener } = await echoServer(t, { tls: { cert, key } })
  const l = listener as WebSocketListener
  t.ok(l.secure, 'secure listener')
  t.match(l.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/)
  t.not(l.port, 0, 'the real port')
  const { ct: untrusting } = await goodClient(t)
  await t.rejects(untrusting.connect(l.peer), { code: 'ERR_CONNECTION_REFUSED', message: /self[- ]signed|certificate/i }, 'no CA: refused with the TLS reason')
  // a different self-signed certificate as CA is no better
  const other = makeCert(t)
  const { ct: wrongCa } = await goodClient(t, { tls: { ca: other.cert } })
  await t.rejects(wrongCa.connect(l.peer), { code: 'ERR_CONNECTION_REFUSED', message: /certificate|signature/i }, 'wrong CA: refused')
  // ws:// to a wss:// listener fails too
  const { ct: plain } = await goodClient(t)
  await t.rejects(plain.connect(l.address), { code: 'ERR_CONNECTION_REFUSED' }, 'plain ws to a TLS port: refused')
  // pinned: route text /wss/HOST:PORT works
  const { client } = await goodClient(t, { tls: { ca: cert } })
  const r = await client.request([...parseRoute(`/wss/${l.address}`), local('echo')], Buffer.from('pinned'))
  t.equal(Buffer.from(r.payload).toString(), 'pinned', 'with the certificate pinned as CA, /wss/ works')
  // and the browser transport on a shim that trusts the certificate
  class TlsShim extends WebSocket {
    constructor(url: string) {
      super(url, { ca: cert })
    }
  }
  const b = await new Node({ name: 'browser', logger: silentLogger }).start()
  t.teardown(() => b.stop())
  b.addTransport(new BrowserWebSocketTransport(b, { WebSocket: TlsShim }))
  const rb = await b.request([new Address(2, l.peer), local('echo')], Buffer.from('browser'))
  t.equal(Buffer.from(rb.payload).toString(), 'browser', 'browser transport over wss')
  // a browser that cannot reach the server: ERR_CONNECTION_REFUSED
  const bt = new BrowserWebSocketTransport(b, { WebSocket: ShimWebSocket })
  await t.rejects(bt.connect(l.peer), { code: 'ERR_CONNECTION_REFUSED' }, 'browser transport, untrusted: refused')
})

t.test('permessage-deflate is off on both ends, whatever the client offers', async (t) => {
  const { listener, st } = await echoServer(t)
  // a ws client with its defaults offers permessage-deflate (as browsers do); the server declines
  const ws = new WebSocket(`ws://${listener.address}/`)
  t.teardown(() => ws.terminate())
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  t.equal(ws.extensions, '', 'the server declined the offer')
  const { ct } = await goodClient(t)
  const conn = await ct.connect(listener.address)
  const link = conn.link as WebSocketLink
  t.equal(link.ws.extensions, '', 'our client does not negotiate it')
  await until(() => st.connections().length === 2, 3000, 'both inbound')
  for (const c of st.connections()) t.equal((c.link as WebSocketLink).ws.extensions, '', 'server side: no extension')
  // the browser transport (shim with default options, so it offers deflate)
  const b = await new Node({ name: 'browser', logger: silentLogger }).start()
  t.teardown(() => b.stop())
  const bt = new BrowserWebSocketTransport(b, { WebSocket: ShimWebSocket })
  b.addTransport(bt)
  const bc = await bt.connect(listener.address)
  t.equal(((bc.link as unknown as { ws: WebSocket }).ws).extensions, '', 'browser shim: declined')
})

/** A raw ws server that stops reading each client until told (`peer.resume()`), counting bytes. */
async function pausedWsServer(t: Test, options: { perMessageDeflate?: false }) {
  const { WebSocketServer } = await import('ws')
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 4 * 1024 * 1024, ...options })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  const state = { wss, peer: undefined as WebSocket | undefined, received: 0 }
  wss.on('connection', (ws) => {
    state.peer = ws
    ws.pause()
    ws.on('message', (d: Buffer) => void (state.received += d.length))
  })
  t.teardown(() => new Promise<void>((resolve) => {
    for (const c of wss.clients) c.terminate()
    wss.close(() => resolve())
  }))
  return state
}

t.test('backpressure: writeFrame returns false over the high-water mark; onDrain follows', async (t) => {
  const sink = await pausedWsServer(t, { perMessageDeflate: false })
  const { wss } = sink
  const { ct } = await goodClient(t, { heartbeatInterval: 0 })
  const port = (wss.address() as net.AddressInfo).port
  const conn = await ct.connect(`127.0.0.1:${port}`)
  const link = conn.link as WebSocketLink
  let drains = 0
  const onDrain = link.onDrain
  link.onDrain = () => {
    drains++
    onDrain()
  }
  await until(() => sink.peer !== undefined, 3000, 'server side')
  const payload = randomBytes(64 * 1024)
  let writes = 0
  let sent = 0
  while (link.writeFrame(hex('01 00'), payload)) {
    writes++
    sent += 2 + payload.length
    if (writes > 100_000) break
    // let the socket flush to the kernel, whose buffers fill up first
    if (writes % 16 === 0) await sleep(1)
  }
  sent += 2 + payload.length
  t.ok(link.ws.bufferedAmount >= WS_HIGH_WATER_MARK, `false at bufferedAmount ${link.ws.bufferedAmount} after ${writes + 1} frames`)
  t.equal(drains, 0, 'no drain yet')
  sink.peer!.resume()
  await until(() => drains === 1, 10_000, 'drain')
  t.ok(link.ws.bufferedAmount < WS_HIGH_WATER_MARK, 'drained under the mark')
  await until(() => sink.received === sent, 10_000, 'everything arrives')
  t.equal(sink.received, sent, `${sent} bytes arrived`)
})

t.test('browser link: backpressure by polling bufferedAmount, and frames queued while paused', async (t) => {
  const sink = await pausedWsServer(t, {})
  const { wss } = sink
  const b = await new Node({ name: 'browser', logger: silentLogger }).start()
  t.teardown(() => b.stop())
  const bt = new BrowserWebSocketTransport(b, { WebSocket: ShimWebSocket, heartbeatInterval: 0, highWaterMark: 256 * 1024 })
  b.addTransport(bt)
  const port = (wss.address() as net.AddressInfo).port
  const conn = await bt.connect(`127.0.0.1:${port}`)
  const link = conn.link
  let drains = 0
  const onDrain = link.onDrain
  link.onDrain = () => {
    drains++
    onDrain()
  }
  const frames: Uint8Array[] = []
  link.onFrame = (f) => void frames.push(f)
  await until(() => sink.peer !== undefined, 3000, 'server side')
  const payload = randomBytes(64 * 1024)
  let writes = 0
  while (link.writeFrame(hex('01 00'), payload) && writes < 100_000) {
    writes++
    if (writes % 16 === 0) await sleep(1)
  }
  t.ok(writes < 100_000, `writeFrame returned false after ${writes + 1} frames`)
  sink.peer!.resume()
  await until(() => drains === 1, 10_000, 'drain by polling')
  t.pass('onDrain after bufferedAmount fell')
  // paused: frames are held, then delivered in order on resume
  link.pause()
  for (let i = 0; i < 5; i++) sink.peer!.send(Buffer.from([i]))
  await sleep(100)
  t.equal(frames.length, 0, 'nothing delivered while paused')
  link.resume()
  await until(() => frames.length === 5, 3000, 'delivery on resume')
  t.same(frames.map((f) => f[0]), [0, 1, 2, 3, 4], 'in order')
  t.ok(frames.every((f) => f instanceof Uint8Array), 'frames are Uint8Array views of the ArrayBuffer')
  // a text message from the server closes the link with ERR_WS_PROTOCOL
  const closedWith = new Promise<string | undefined>((resolve) => conn.onClose((e) => resolve(e?.code)))
  const peerClose = new Promise<number>((resolve) => sink.peer!.on('close', (c: number) => resolve(c)))
  sink.peer!.send('text')
  t.equal(await closedWith, 'ERR_WS_PROTOCOL', 'a text message: ERR_WS_PROTOCOL')
  t.equal(await peerClose, 4003, 'the browser link closes with 3000 + 1003')
})

t.test('ws listener: addresses, stop, and a dial to a closed port', async (t) => {
  const node = await new Node({ name: 'n', logger: silentLogger }).start()
  t.teardown(() => node.stop())
  const tr = new WebSocketTransport(node)
  node.addTransport(tr)
  const l = await tr.listen('127.0.0.1:0')
  t.match(l.address, /^127\.0\.0\.1:\d+$/)
  t.equal(l.peer, l.address)
  t.equal(l.url, `ws://${l.address}/`)
  t.notOk(l.secure)
  await t.rejects(tr.listen(l.address), { code: 'ERR_LISTEN_FAILED' }, 'the port is taken')
  await l.close()
  await t.rejects(tr.connect(l.address), { code: 'ERR_CONNECTION_REFUSED', message: /ECONNREFUSED/ }, 'closed port: refused')
  await t.rejects(tr.connect('wss:nope'), { code: 'ERR_TRANSPORT_ADDRESS' })
  await t.rejects(tr.listen('127.0.0.1:0', { tls: { cert: 'not a certificate', key: 'not a key' } }), { code: 'ERR_LISTEN_FAILED' }, 'bad TLS material')
})
