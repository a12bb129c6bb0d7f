// The relay service (in-process, memory transport) and the `throughline` command (real
// processes over TCP on 127.0.0.1): acceptance 1-3 of the router issue.
import t, { type Test } from 'tap'
import { pack, unpack } from 'msgpackr'
import { Node, Address, silentLogger, route, local, type DropEvent } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'
import { runCli, startCli } from './helpers/cli.ts'
import { sleep } from './helpers/wait.ts'


async function relaySetup(t: Test, lease?: number) {
  const network = new MemoryNetwork()
  const mk = async (name: string): Promise<{ node: Node; tr: MemoryTransport }> => {
    const node = await new Node({ name, logger: silentLogger }).start()
    const tr = new MemoryTransport(node, { network })
    node.addTransport(tr)
    t.teardown(() => node.stop())
    return { node, tr }
  }
  const R = await mk('R')
  const relay = new RelayService(R.node, lease === undefined ? {} : { lease })
  startEcho(R.node)
  await R.tr.listen('relay', { allow: ['echo', 'relay', 'forward_to_*'], transit: true })
  return { mk, R, relay }
}

function registered(c: RelayClient): Promise<{ name: string; address: string }> {
  return new Promise((resolve, reject) => {
    c.once('registered', resolve)
    c.once('error', reject)
  })
}

t.test('relay: register, forward along the return route, reply back through the relay', async (t) => {
  const { mk, relay } = await relaySetup(t)
  const D = await mk('D')
  startEcho(D.node)
  const client = new RelayClient(D.node, { relayRoute: route('4#relay'), name: 'd', allow: ['echo'] })
  const p = registered(client)
  client.start()
  t.same(await p, { name: 'd', address: 'forward_to_d' })
  t.same(relay.names(), ['d'])
  const C = await mk('C')
  const r = await C.node.request(route('4#relay', 'forward_to_d', 'echo'), Buffer.from('through'))
  t.equal(Buffer.from(r.payload).toString(), 'through')
  // the device's allow-list holds for forwarded messages
  D.node.startWorker('private', { handleMessage: () => { t.fail('must not be reached') } })
  const drops: DropEvent[] = []
  D.node.on('drop', (e: DropEvent) => drops.push(e))
  C.node.send(route('4#relay', 'forward_to_d', 'private'), Buffer.from('x'))
  await sleep(50)
  t.equal(drops[0]?.reason, 'flow-denied', 'forwarded traffic may reach only what the device allows')
})

t.test('relay: a taken name is refused; the holder re-registers with its token', async (t) => {
  const { mk, R } = await relaySetup(t)
  const D = await mk('D')
  const E = await mk('E')
  const d = new RelayClient(D.node, { relayRoute: route('4#relay'), name: 'same', allow: [] })
  const pd = registered(d)
  d.start()
  await pd
  const e = new RelayClient(E.node, { relayRoute: route('4#relay'), name: 'same', allow: [], retryDelay: 10_000 })
  const err = new Promise<Error & { code: string }>((resolve) => e.once('error', resolve))
  e.start()
  t.equal((await err).code, 'ERR_RELAY_NAME_TAKEN', 'a second node cannot take a live name')
  e.stop()
  // the holder renews (same token) without trouble
  const again = registered(d)
  d.start()
  await again
  t.pass('the holder renews its registration')
  // bad requests get typed answers
  const C = await mk('C')
  const bad = await C.node.request(route('4#relay', 'relay'), Buffer.from([0xc1]))
  t.match(unpack(bad.payload), { ok: false, code: 'ERR_BAD_REQUEST' })
  const badName = await C.node.request(route('4#relay', 'relay'), pack({ op: 'register', name: 'no spaces allowed' }))
  t.match(unpack(badName.payload), { ok: false, code: 'ERR_RELAY_NAME_INVALID' })
  t.throws(() => new RelayClient(C.node, { relayRoute: route('4#relay'), name: '', allow: [] }), { code: 'ERR_RELAY_NAME_INVALID' })
  t.ok(R.node.hasWorker('forward_to_same'))
})

t.test('relay: a registration ends with its connection, or when its lease runs out', async (t) => {
  const { mk, R, relay } = await relaySetup(t, 300)
  const D = await mk('D')
  const d = new RelayClient(D.node, { relayRoute: route('4#relay'), name: 'gone', allow: [] })
  const p = registered(d)
  d.start()
  await p
  d.stop()
  for (const c of D.tr.connections()) c.close()
  await sleep(50)
  t.same(relay.names(), [], 'removed when the connection closed')
  t.notOk(R.node.hasWorker('forward_to_gone'))
  // lease expiry: the client stops renewing but keeps its connection
  const E = await mk('E')
  const e = new RelayClient(E.node, { relayRoute: route('4#relay'), name: 'lease', allow: [] })
  const pe = registered(e)
  e.start()
  await pe
  e.stop()
  t.same(relay.names(), ['lease'])
  await sleep(600)
  t.same(relay.names(), [], 'removed when the lease ran out')
  // and the name is free again for anyone
  const F = await mk('F')
  const f = new RelayClient(F.node, { relayRoute: route('4#relay'), name: 'lease', allow: [] })
  const pf = registered(f)
  f.start()
  await pf
  t.same(relay.names(), ['lease'])
  f.stop()
})

t.test('cli: node start + send to echo (acceptance 2)', async (t) => {
  const node = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0'])
  const [, hostPort] = await node.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const r = await runCli(['send', '--to', `/tcp/${hostPort}/service/echo`, 'hello'])
  t.equal(r.stdout, 'hello\n')
  t.equal(r.code, 0)
  t.equal(await node.stop('SIGINT'), 0, 'exits 0 on SIGINT after an orderly shutdown')
})

t.test('cli: two hops through a relay that restarts (acceptance 3)', async (t) => {
  const R1 = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--name', 'R'])
  const [, rAddr] = await R1.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--relay-at', `/tcp/${rAddr}`, '--relay-name', 'd', '--name', 'D'])
  await D.waitFor(/^listening tcp /)
  await D.waitFor(/^relay registered d$/)
  const via = `/tcp/${rAddr}/service/forward_to_d/service/echo`
  const first = await runCli(['send', '--to', via, 'hi'])
  t.equal(first.stdout, 'hi\n', 'hi through the relay')
  t.equal(first.code, 0)
  // stop R, start it again on the same port
  t.equal(await R1.stop(), 0, 'R exits 0 on SIGTERM')
  const down = await runCli(['send', '--to', via, '--timeout', '2000', 'hi'])
  t.not(down.code, 0, 'send fails while the relay is down')
  t.match(down.stderr, /^error: ERR_CONNECTION_REFUSED: cannot reach the first hop/, 'and says why, on one line')
  t.equal(down.stderr.trim().split('\n').length, 1)
  const mark = D.stdout.length
  const R2 = startCli(t, ['node', 'start', '--tcp', rAddr!, '--name', 'R'])
  await R2.waitFor(/^listening tcp /)
  const restarted = Date.now()
  await D.waitFor(/^relay registered d$/, 10_000, mark)
  t.ok(Date.now() - restarted < 10_000, `D registered again after ${Date.now() - restarted} ms`)
  const again = await runCli(['send', '--to', via, 'hi'])
  t.equal(again.stdout, 'hi\n', 'the same send works again')
  t.equal(await D.stop(), 0)
  t.equal(await R2.stop(), 0)
})

t.test('cli: errors name their cause and exit non-zero', async (t) => {
  // (this node copies no payload into its TCP write batches: it still answers)
  const timeout = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--tcp-coalesce-max', '0'])
  const [, hp] = await timeout.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const echoed = await runCli(['send', '--to', `/tcp/${hp}/service/echo`, 'zero-copy'])
  t.equal(echoed.stdout, 'zero-copy\n', 'a node with --tcp-coalesce-max 0 answers')
  const cases: [string[], RegExp, number][] = [
    [['send', '--to', `/tcp/${hp}/service/nobody`, '--timeout', '300', 'x'], /^error: ERR_TIMEOUT: no reply within 300 ms/, 1],
    [['send', '--to', '/tcpp/127.0.0.1:1', 'x'], /^error: ERR_ROUTE_SYNTAX: segment 1 .*unknown protocol "tcpp"/, 1],
    [['send', '--to', '/tcp/127.0.0.1:99999/service/echo', 'x'], /^error: ERR_ROUTE_SYNTAX: segment 1 .*not HOST:PORT/, 1],
    [['send', 'x'], /^error: ERR_CLI_USAGE: send needs --to ROUTE/, 2],
    [['send', '--to', '/service/echo'], /^error: ERR_CLI_USAGE: send needs exactly one MESSAGE/, 2],
    [['send', '--to', '/service/echo', '--timeout', 'soon', 'x'], /^error: ERR_CLI_USAGE: --timeout must be/, 2],
    [['node', 'start', '--relay-at', '/tcp/127.0.0.1:1'], /^error: ERR_CLI_USAGE: --relay-at and --relay-name go together/, 2],
    [['node', 'start', '--tcp', hp!], /^error: ERR_LISTEN_FAILED: cannot listen on tcp .*EADDRINUSE/, 1],
    [['bogus'], /^error: ERR_CLI_USAGE: unknown command/, 2],
    [['node', 'start', '--tcp-coalesce-max', 'lots'], /^error: ERR_CLI_USAGE: --tcp-coalesce-max takes a number of bytes, got "lots"/, 2],
  ]
  for (const [args, re, code] of cases) {
    const r = await runCli(args)
    t.match(r.stderr, re, args.join(' '))
    t.equal(r.code, code, `exit ${code}`)
    t.equal(r.stdout, '', 'nothing on stdout')
  }
  const help = await runCli(['help'])
  t.match(help.stdout, /throughline node start/)
  t.equal(help.code, 0)
})

t.test('a relay node does not dial out for the network', async (t) => {
  const { mk, R } = await relaySetup(t)
  const C = await mk('C')
  const drops: DropEvent[] = []
  R.node.on('drop', (e: DropEvent) => drops.push(e))
  C.node.send([new Address(4, 'relay'), new Address(1, '127.0.0.1:9'), local('echo')], Buffer.from('x'))
  await sleep(50)
  t.equal(drops[0]?.reason, 'flow-denied')
  t.match(drops[0]?.error?.message, /may not open connections/)
})

t.test('cli: secure channel end to end through a relay over TCP (issue 4, acceptance 2)', async (t) => {
  const home = t.testdir()
  const created = await runCli(['identity', 'create', 'dev', '--home', home])
  t.equal(created.code, 0)
  const deviceId = created.stdout.trim()
  t.match(deviceId, /^I[0-9a-f]{40}$/)
  const shown = await runCli(['identity', 'show', 'dev', '--home', home])
  t.match(shown.stdout, new RegExp(`^${deviceId}\\npublic key \\(ed25519\\): [0-9a-f]{64}\\n$`))
  const R = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--name', 'R'])
  const [, rAddr] = await R.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--relay-at', `/tcp/${rAddr}`, '--relay-name', 'd', '--identity', 'dev', '--secure-listener', '--home', home, '--name', 'D'])
  await D.waitFor(new RegExp(`^secure listener ${deviceId}$`))
  await D.waitFor(/^relay registered d$/)
  const to = `/tcp/${rAddr}/service/forward_to_d/secure/secure/service/echo`
  const r = await runCli(['send', '--to', to, 'hello'])
  t.equal(r.stdout, 'hello\n', 'hello through the relay, inside the channel')
  t.equal(r.code, 0)
  // the client pins the device's identifier
  const pinned = await runCli(['send', '--to', to, '--trust', deviceId, 'pinned'])
  t.equal(pinned.stdout, 'pinned\n')
  const wrong = await runCli(['send', '--to', to, '--trust', `I${'0'.repeat(40)}`, 'x'])
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /^error: ERR_TRUST_POLICY: peer I[0-9a-f]{40} is not trusted/)
  // a device that trusts only one client identity refuses others
  await runCli(['identity', 'create', 'client', '--home', home])
  const clientId = (await runCli(['identity', 'show', 'client', '--home', home])).stdout.split('\n')[0]!
  const strict = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--trust', clientId, '--home', home])
  const [, sAddr] = await strict.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const ok = await runCli(['send', '--to', `/tcp/${sAddr}/secure/secure/service/echo`, '--identity', 'client', '--home', home, 'me'])
  t.equal(ok.stdout, 'me\n', 'the trusted client gets through')
  const refused = await runCli(['send', '--to', `/tcp/${sAddr}/secure/secure/service/echo`, 'stranger'])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /^error: ERR_TRUST_POLICY: the peer does not trust this identity/, 'an ephemeral identity is refused, and told so')
  t.equal(await strict.stop(), 0)
  t.equal(await D.stop(), 0)
  t.equal(await R.stop(), 0)
})
