// The transport compliance suite: every transport (TCP, memory, WebSocket, serial) runs it.
// A transport passes when messages cross it intact and in order at any size up to its frame
// limit, backpressure holds, dials are de-duplicated, deny-by-default holds for its listeners,
// heartbeats keep idle connections open, idle peers are closed, and persistent connections
// come back after a loss.
import type { Test } from 'tap'
import { Node, silentLogger, type Address, type Message, type DropEvent, route } from '../../src/router/index.ts'
import type { BaseTransport, Connection, Listener, ConnectionEvent, TransportOptions } from '../../src/transports/index.ts'
import { sleep, until } from '../helpers/wait.ts'

export interface TransportUnderTest {
  name: string
  /** Makes the transport for a node and registers it. */
  make(node: Node, options?: TransportOptions): BaseTransport
  /** Listens (with the given listen options) and returns the listener. */
  listen(transport: BaseTransport, options: { allow?: string[]; transit?: boolean }): Promise<Listener>
  /** The transport address (`type#value`) a dialler uses to reach `listener`. */
  addressOf(listener: Listener): Address
  /** Largest payload the suite may send (frame limit minus envelope overhead). Default 512 KiB. */
  maxPayload?: number
  /**
   * Capability: the listener is one end of a point-to-point link (a serial line), and the
   * dialler opens the other end. The listener's connection exists from `listen()` on, so
   * "one inbound connection" is counted on the transport instead of by later `connection-open`
   * events; and an end is taken by one node at a time, so the client lets go of its end
   * before the quiet peer of the idle-timeout test opens it.
   */
  pointToPoint?: boolean
}



export async function transportCompliance(t: Test, tut: TransportUnderTest): Promise<void> {
  const setup = async (t: Test, opts: { server?: TransportOptions; client?: TransportOptions; allow?: string[] } = {}) => {
    const server = await new Node({ name: `${tut.name}-server`, logger: silentLogger }).start()
    const client = await new Node({ name: `${tut.name}-client`, logger: silentLogger }).start()
    const st = tut.make(server, opts.server)
    const ct = tut.make(client, opts.client)
    server.startWorker('echo', { handleMessage: (ctx, m) => ctx.reply(m, m.payload) })
    const listener = await tut.listen(st, { allow: opts.allow ?? ['echo', 'sink'] })
    t.teardown(async () => {
      await client.stop()
      await server.stop()
    })
    return { server, client, st, ct, listener, peer: tut.addressOf(listener) }
  }

  await t.test(`${tut.name}: echo round trip over a route`, async (t) => {
    const { client, peer } = await setup(t)
    const reply = await client.request([peer, ...route('echo')], Buffer.from('hello'))
    t.equal(Buffer.from(reply.payload).toString(), 'hello')
    t.equal(reply.return[0]!.text, peer.text === reply.return[0]!.text ? peer.text : reply.return[0]!.text)
    t.ok(reply.local.connection, 'the reply carries the connection it came through')
  })

  await t.test(`${tut.name}: many messages of many sizes arrive intact and in order`, async (t) => {
    const { server, client, peer } = await setup(t)
    const got: Buffer[] = []
    server.startWorker('sink', { handleMessage: (_c, m) => void got.push(Buffer.from(m.payload)) })
    const max = tut.maxPayload ?? 512 * 1024
    const sizes = [0, 1, 2, 3, 4, 5, 100, 1000, 4096, 65535, 65536, 65537, max]
    const sent: Buffer[] = []
    for (let i = 0; i < 1000; i++) {
      const size = sizes[i % sizes.length]!
      const b = Buffer.alloc(size, i & 0xff)
      if (size >= 4) b.writeUInt32BE(i, 0)
      sent.push(b)
      client.send([peer, ...route('sink')], b)
    }
    await until(() => got.length === sent.length, 30_000, 'all messages')
    let same = true
    for (let i = 0; i < sent.length; i++) if (!sent[i]!.equals(got[i]!)) same = false
    t.ok(same, `${sent.length} messages identical and in order`)
  })

  await t.test(`${tut.name}: backpressure to a slow worker loses nothing`, async (t) => {
    const { server, client, peer } = await setup(t)
    const got: number[] = []
    server.startWorker(
      'sink',
      {
        handleMessage: async (_c, m) => {
          if (got.length % 50 === 0) await sleep(1)
          got.push(Buffer.from(m.payload).readUInt32BE(0))
        },
      },
      { mailboxCapacity: 8 },
    )
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.alloc(1024)
      b.writeUInt32BE(i, 0)
      client.send([peer, ...route('sink')], b)
    }
    await until(() => got.length === 3000, 30_000, '3000 messages')
    t.same(got, Array.from({ length: 3000 }, (_, i) => i), 'all, in order')
    t.equal(server.dropCount(), 0, 'no drops')
  })

  await t.test(`${tut.name}: concurrent dials to one peer share one connection`, async (t) => {
    const { client, ct, st, peer, server } = await setup(t)
    let inbound = 0
    server.on('connection-open', (e: ConnectionEvent) => { if (!e.dialled) inbound++ })
    const conns = await Promise.all([1, 2, 3, 4, 5].map(() => ct.connect(peer.value)))
    t.ok(conns.every((c) => c === conns[0]), 'same connection object')
    for (let i = 0; i < 5; i++) client.send([peer, ...route('echo')], Buffer.from('x'))
    await client.request([peer, ...route('echo')], Buffer.from('y'))
    if (tut.pointToPoint === true) {
      t.equal(server.stats.drops['connection-refused'] ?? 0, 0, 'no connection refused')
      t.equal(st.connections().filter((c) => !c.options.dialled).length, 1, 'the server has one connection (point to point)')
    } else {
      t.equal(inbound, 1, 'the server saw one connection')
    }
    // a dial with an aborted signal fails with ERR_ABORTED
    const other = await new Node({ name: 'other', logger: silentLogger }).start()
    t.teardown(() => other.stop())
    await t.rejects(tut.make(other).connect(peer.value, { signal: AbortSignal.abort() }), { code: 'ERR_ABORTED' })
  })

  await t.test(`${tut.name}: deny by default; what the listener allows is reachable`, async (t) => {
    const { server, client, peer } = await setup(t, { allow: [] })
    const drops: DropEvent[] = []
    server.on('drop', (e: DropEvent) => drops.push(e))
    server.startWorker('secret', { handleMessage: () => { t.fail('must not be reached') } })
    client.send([peer, ...route('secret')], Buffer.from('x'))
    await until(() => drops.length === 1, 5000, 'the drop')
    t.equal(drops[0]!.reason, 'flow-denied')
    t.equal(drops[0]!.error?.code, 'ERR_ACCESS_DENIED')
    t.equal(server.stats.drops['flow-denied'], 1, 'counted')
  })

  await t.test(`${tut.name}: heartbeats keep an idle connection; a silent peer is closed`, async (t) => {
    const { client, ct, peer, server } = await setup(t, {
      server: { heartbeatInterval: 30, idleTimeout: 150 },
      client: { heartbeatInterval: 30, idleTimeout: 150 },
    })
    const conn = await ct.connect(peer.value)
    await sleep(450)
    t.notOk(conn.closed, 'open after 3 idle timeouts thanks to heartbeats')
    await client.request([peer, ...route('echo')], Buffer.from('still here'))
    // a peer that sends no heartbeats is closed by the server's idle timeout
    const quiet = await new Node({ name: 'quiet', logger: silentLogger }).start()
    t.teardown(() => quiet.stop())
    const qt = tut.make(quiet, { heartbeatInterval: 0, idleTimeout: 0 })
    const closed: ConnectionEvent[] = []
    let qc: Connection
    if (tut.pointToPoint === true) {
      // one end, one node: the client lets go of it (the server's connection may end with it),
      // then the quiet peer opens it as soon as it is free
      const serverSideEnded = new Promise<void>((resolve) => server.once('connection-closed', () => resolve()))
      ct.disconnect(peer.value)
      await Promise.race([serverSideEnded, sleep(1000)])
      server.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
      const end = Date.now() + 3000
      for (;;) {
        try {
          qc = await qt.connect(peer.value)
          break
        } catch (err) {
          if (Date.now() > end) throw err
          await sleep(20)
        }
      }
    } else {
      server.on('connection-closed', (e: ConnectionEvent) => closed.push(e))
      qc = await qt.connect(peer.value)
    }
    await until(() => closed.length === 1, 3000, 'idle close')
    t.equal(closed[0]!.error?.code, 'ERR_IDLE_TIMEOUT')
    await until(() => qc.closed, 3000, 'client side sees the close')
  })

  await t.test(`${tut.name}: a persistent connection comes back after it is lost`, async (t) => {
    const { client, ct, peer } = await setup(t, { client: { reconnectInitialDelay: 20, reconnectMaxDelay: 100 } })
    let opened = 0
    client.on('connection-open', (e: ConnectionEvent) => { if (e.dialled) opened++ })
    const c1 = await ct.connect(peer.value, { persistent: true })
    c1.close()
    await until(() => opened === 2, 5000, 'reconnect')
    t.not(ct.connectionTo(peer.value), c1, 'a new connection')
    const r = await client.request([peer, ...route('echo')], Buffer.from('back'))
    t.equal(Buffer.from(r.payload).toString(), 'back')
    ct.disconnect(peer.value)
    await sleep(200)
    t.equal(opened, 2, 'no re-dial after disconnect')
  })

  await t.test(`${tut.name}: a message over the frame limit is dropped at the sender`, async (t) => {
    const { client, peer } = await setup(t, { client: { maxFrameSize: 1000 } })
    const drops: DropEvent[] = []
    client.on('drop', (e: DropEvent) => drops.push(e))
    client.send([peer, ...route('echo')], Buffer.alloc(2000))
    await until(() => drops.length === 1, 5000, 'drop')
    t.equal(drops[0]!.error?.code, 'ERR_FRAME_TOO_LARGE')
    const r = await client.request([peer, ...route('echo')], Buffer.from('small'))
    t.equal(Buffer.from(r.payload).toString(), 'small', 'the connection still works')
  })

  await t.test(`${tut.name}: the route carries on past the transport hop`, async (t) => {
    const { server, client, peer } = await setup(t, { allow: ['hop', 'end'] })
    const seen: Message[] = []
    server.startWorker('hop', { handleMessage: (ctx, m) => ctx.forward(m) })
    server.startWorker('end', { handleMessage: (_c, m) => void seen.push(m) })
    client.send([peer, ...route('hop', 'end')], Buffer.from('x'), { returnRoute: route('me') })
    await until(() => seen.length === 1, 5000, 'delivery')
    t.equal(seen[0]!.return.length, 2, 'return route: connection, then the sender')
    t.equal(seen[0]!.return[1]!.text, '0#me')
    t.ok(seen[0]!.local.flow, 'the flow restriction travels with a forwarded message')
    // and so a forward cannot reach what the listener does not allow
    server.startWorker('inner', { handleMessage: () => { t.fail('must not be reached') } })
    const drops: DropEvent[] = []
    server.on('drop', (e: DropEvent) => drops.push(e))
    client.send([peer, ...route('hop', 'inner')], Buffer.from('x'))
    await until(() => drops.length === 1, 5000, 'drop')
    t.equal(drops[0]!.reason, 'flow-denied')
  })
}
