// Attestation end to end across two relays, over real sockets: client C —TCP→ relay R1 —WebSocket→
// relay R2 —TCP→ device D. The evidence in D's handshake message binds to the channel C and D
// share; the relays forward ciphertext. A rogue relay that answers the handshake itself and swaps
// in evidence from a genuine device is rejected (the handle names another session and another key).
import t, { type Test } from 'tap'
import { Node, silentLogger, route, local, type Message } from '../src/router/index.ts'
import { TcpTransport, WebSocketTransport } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'
import { SecureChannels, SoftwareIdentity, resolveRoute, trustIdentifiers } from '../src/channel/index.ts'
import { ReferenceValues, SimAttester, SimPlatform, SimRoot, Verifier, type Attester, type Evidence } from '../src/attest/index.ts'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import { until } from './helpers/wait.ts'

async function mk(t: Test, name: string): Promise<Node> {
  const node = await new Node({ name, logger: silentLogger }).start()
  node.addTransport(new TcpTransport(node))
  node.addTransport(new WebSocketTransport(node))
  t.teardown(() => node.stop())
  return node
}

/** Starts a relay registration and waits for the first success. */
async function registered(client: RelayClient): Promise<void> {
  await new Promise<void>((resolve) => {
    client.once('registered', () => resolve())
    client.start()
  })
}

const tcp = (n: Node) => n.transport(1) as TcpTransport
const ws = (n: Node) => n.transport(2) as WebSocketTransport

t.test('C —TCP→ R1 —WS→ R2 —TCP→ D: attestation binds end to end; a rogue relay swapping in evidence is rejected', async (t) => {
  const root = SimRoot.generate('relay-test-root')
  const platform = new SimPlatform({ root })
  const verifier = new Verifier({ id: 'v', trustAnchors: { simRoots: [root.publicKeySpki] }, referenceValues: new ReferenceValues([platform.referenceSet('d')]), policy: { id: 'test', trustSim: true } })

  // R1: TCP listener for clients, WebSocket listener where R2 registers.
  const R1 = await mk(t, 'R1')
  new RelayService(R1)
  const r1Tcp = await tcp(R1).listen('127.0.0.1:0', { allow: ['relay', 'forward_to_*'], transit: true })
  const r1Ws = await ws(R1).listen('127.0.0.1:0', { allow: ['relay'], transit: true })
  // R2: registered at R1 over WebSocket (transit: it forwards what arrives there), TCP listener for D.
  const R2 = await mk(t, 'R2')
  new RelayService(R2)
  const r2Tcp = await tcp(R2).listen('127.0.0.1:0', { allow: ['relay', 'forward_to_*'], transit: true })
  const r2reg = new RelayClient(R2, { relayRoute: route(`2#${r1Ws.address}`), name: 'r2', allow: ['forward_to_*'], transit: true })
  t.teardown(() => r2reg.stop())
  await registered(r2reg)
  // D: the device, registered at R2 over TCP, secure listener with the sim attester.
  const D = await mk(t, 'D')
  startEcho(D)
  const dId = SoftwareIdentity.generate()
  const dCh = new SecureChannels(D, { identity: dId, attestation: { attesters: [new SimAttester(platform)] } })
  await dCh.listen('secure', { allow: ['echo'] })
  const dreg = new RelayClient(D, { relayRoute: route(`1#${r2Tcp.address}`), name: 'd', allow: ['secure'] })
  t.teardown(() => dreg.stop())
  await registered(dreg)

  // C: requires sim evidence of the device.
  const C = await mk(t, 'C')
  const cCh = new SecureChannels(C, { identity: SoftwareIdentity.generate() })
  const text = `/tcp/${r1Tcp.address}/service/forward_to_r2/service/forward_to_d/secure/secure/service/echo`
  const { route: r, channels } = await resolveRoute(text, cCh, { attestation: { require: ['sim'], verifier }, trust: trustIdentifiers([dId.identifier]) })
  const ch = channels[0]!
  t.equal(ch.attestation?.status, 'affirming', 'evidence from D appraised through two relays')
  t.same(Buffer.from(ch.attestation!.keyAttestation.pub), Buffer.from(dCh.staticKeyPair.publicKey), "bound to D's static key")
  const reply = await C.request(r, Buffer.from('through TCP and WebSocket'), { timeout: 3_000 })
  t.equal(Buffer.from(reply.payload).toString(), 'through TCP and WebSocket')
  t.equal(ch.peer?.attributes['attest.status'], 'affirming')

  await t.test('a rogue relay answers the handshake itself with evidence captured from D', async (t) => {
    // The rogue R2' registers at R1 as "r2x" and, instead of relaying to D, hands every message for
    // forward_to_d to its own listener. It holds genuine evidence of D, captured through an honest
    // channel it opened to D itself (as any client can).
    const X = await mk(t, 'X')
    new RelayService(X)
    const xreg = new RelayClient(X, { relayRoute: route(`2#${r1Ws.address}`), name: 'r2x', allow: ['forward_to_d', 'rogue'], transit: true })
    t.teardown(() => xreg.stop())
    await registered(xreg)
    const xCh = new SecureChannels(X, { identity: SoftwareIdentity.generate() })
    let captured: Evidence | undefined
    const capture = { appraise: async (req: Parameters<Verifier['appraise']>[0]) => ((captured = req.evidence), verifier.appraise(req)) }
    const toD = await xCh.connect([...route(`1#${r2Tcp.address}`), local('forward_to_d'), local('secure')], { attestation: { require: ['sim'], verifier: capture } })
    t.equal(toD.attestation?.status, 'affirming', 'the rogue got genuine evidence of D')
    const replay: Attester = { suite: 'sim', attest: async () => captured! }
    const rogue = new SecureChannels(X, { identity: SoftwareIdentity.generate(), attestation: { attesters: [replay] } })
    const rogueListener = await rogue.listen('rogue', { allow: ['echo'] })
    const rogueErrors: ThroughlineError[] = []
    rogueListener.on('error', (e: ThroughlineError) => rogueErrors.push(e))
    X.startWorker('forward_to_d', { handleMessage: (ctx, m: Message) => ctx.forward(m, { onward: [local('rogue'), ...m.onward.slice(2)] }) }, { acceptsNetwork: true })

    const err = await resolveRoute(`/tcp/${r1Tcp.address}/service/forward_to_r2x/service/forward_to_d/secure/secure/service/echo`, cCh, {
      attestation: { require: ['sim'], verifier },
    }).catch((e: unknown) => e)
    t.ok(isThroughlineError(err, 'ERR_ATTEST_VERIFIER_FAILED'), `refused: ${String((err as Error).message)}`)
    t.equal((err as ThroughlineError).details?.['reason'], 'handle_mismatch', "D's evidence names D's key and D's session with the rogue, not this one")
    await until(() => rogueErrors.length === 1)
    t.equal(rogueErrors[0]!.details?.['cause'], 'ATTEST_VERIFIER_FAILED', 'the rogue is told why')

    // With D's identity pinned as well, it is refused too.
    const pinned = await resolveRoute(`/tcp/${r1Tcp.address}/service/forward_to_r2x/service/forward_to_d/secure/secure`, cCh, {
      attestation: { require: ['sim'], verifier },
      trust: trustIdentifiers([dId.identifier]),
    }).catch((e: unknown) => e)
    t.ok(isThroughlineError(pinned), 'refused')
  })
})
