// Secure channels end to end over the router (memory transport; TCP in relay-cli.test.ts):
// through a relay that sees only ciphertext, identities and trust policies, and attacks —
// bit flips, replays, a man in the middle, untrusted identities, half-open handshakes.
import t, { type Test } from 'tap'
import {
  Node,
  silentLogger,
  route,
  local,
  type Address,
  type DropEvent,
  type Message,
} from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'
import {
  SecureChannels,
  SoftwareIdentity,
  createHandshake,
  resolveRoute,
  trustIdentifiers,
  trustPredicate,
  PROLOGUE,
  type SecureChannel,
  type SecureListener,
  identifierOf,
  createBinding,
  verifyBinding,
  IdentityStore,
} from '../src/channel/index.ts'
import { decodeIdentityPayload, encodeIdentityPayload, encodePayload1, frame, MSG } from '../src/channel/messages.ts'
import { isThroughlineError } from '../src/errors.ts'
import { sleep, until } from './helpers/wait.ts'


interface World {
  net: MemoryNetwork
  mk(name: string, observe?: (dir: 'in' | 'out', f: Uint8Array) => void): Promise<Node>
}

function world(t: Test): World {
  const net = new MemoryNetwork()
  return {
    net,
    async mk(name, observe) {
      const node = await new Node({ name, logger: silentLogger }).start()
      node.addTransport(new MemoryTransport(node, { network: net, ...(observe ? { observe } : {}) }))
      await (node.transport(4) as MemoryTransport).listen(name, { allow: ['echo', 'secure', 'relay', 'forward_to_*', 'sink'], transit: true })
      t.teardown(() => node.stop())
      return node
    },
  }
}

/** A device D with a secure listener; a client C with its own identity. */
async function pair(t: Test, w: World, listenOpts: Parameters<SecureChannels['listen']>[1] = {}) {
  const D = await w.mk('D')
  startEcho(D)
  const dId = SoftwareIdentity.generate()
  const dCh = new SecureChannels(D, { identity: dId })
  const listener = await dCh.listen('secure', { allow: ['echo', 'sink'], ...listenOpts })
  const C = await w.mk('C')
  const cId = SoftwareIdentity.generate()
  const cCh = new SecureChannels(C, { identity: cId })
  return { D, C, dId, cId, dCh, cCh, listener }
}

t.test('identities: identifiers, bindings, files', async (t) => {
  const id = SoftwareIdentity.generate()
  t.match(id.identifier, /^I[0-9a-f]{40}$/)
  t.equal(identifierOf('ed25519', id.publicKey), id.identifier)
  const staticKey = new Uint8Array(32).fill(7)
  const b = await createBinding(id, staticKey, 60_000)
  t.equal(verifyBinding(b, staticKey), id.identifier)
  t.throws(() => verifyBinding(b, new Uint8Array(32).fill(8)), { code: 'ERR_IDENTITY_INVALID', message: /another static key/ })
  t.throws(() => verifyBinding(b, staticKey, Date.now() + 120_000), { code: 'ERR_IDENTITY_INVALID', message: /expired/ })
  const forged = { ...b, signature: Uint8Array.from(b.signature).fill(1, 0, 1) }
  t.throws(() => verifyBinding(forged, staticKey), { code: 'ERR_IDENTITY_INVALID', message: /signature/ })
  t.throws(() => verifyBinding({ ...b, v: 2 }, staticKey), { code: 'ERR_IDENTITY_INVALID' })
  t.throws(() => verifyBinding(null, staticKey), { code: 'ERR_IDENTITY_INVALID' })
  const dir = t.testdir()
  const store = new IdentityStore(dir)
  const created = await store.create('alice')
  const loaded = await store.load('alice')
  t.equal(loaded.identifier, created.identifier, 'persists')
  await t.rejects(store.create('alice'), { code: 'ERR_IDENTITY_EXISTS' })
  await t.rejects(store.load('bob'), { code: 'ERR_IDENTITY_NOT_FOUND' })
  await t.rejects(store.load('../x'), { code: 'ERR_IDENTITY_INVALID' })
})

t.test('end to end through a relay that sees only ciphertext', async (t) => {
  const w = world(t)
  const seen: Buffer[] = []
  const R = await w.mk('R', (_dir, f) => seen.push(Buffer.from(f)))
  new RelayService(R)
  const { D, C, dId, cId, cCh } = await pair(t, w)
  const reg = new RelayClient(D, { relayRoute: route('4#R'), name: 'd', allow: ['secure'] })
  await new Promise((resolve) => { reg.once('registered', resolve); reg.start() })
  t.teardown(() => reg.stop())

  const secret = 'TOP-SECRET-PAYLOAD-4242'
  const { route: r, channels } = await resolveRoute('/memory/R/service/forward_to_d/secure/secure/service/echo', cCh, { trust: trustIdentifiers([dId.identifier]) })
  t.equal(channels[0]!.peer?.identifier, dId.identifier, 'the initiator knows the responder')
  seen.length = 0
  const reply = await C.request(r, Buffer.from(secret))
  t.equal(Buffer.from(reply.payload).toString(), secret, 'echo reached only through the channel')
  t.equal(reply.local.peer?.identifier, dId.identifier, 'the reply carries the peer identifier')
  t.equal(reply.local.channel?.text, channels[0]!.address.text)
  const wire = Buffer.concat(seen)
  t.ok(wire.length > 100, `the relay carried ${wire.length} bytes`)
  t.equal(wire.indexOf(secret), -1, 'the payload never appears at the relay')
  t.equal(wire.indexOf('echo'), -1, 'nor the service name')
  // control: the same wiretap sees plaintext sent without a channel
  seen.length = 0
  C.send(route('4#R', 'forward_to_d', 'secure'), Buffer.from(secret))
  await until(() => Buffer.concat(seen).indexOf(secret) >= 0, 2000, 'the control message at the wiretap')
  t.pass('control: unencrypted traffic is visible to the wiretap')
  // the responder side saw the initiator's identity on delivered messages
  let who: string | undefined
  D.startWorker('sink', { handleMessage: (_c, m) => { who = m.local.peer?.identifier } })
  C.send([channels[0]!.address, local('sink')], Buffer.from('x'))
  await until(() => who !== undefined)
  t.equal(who, cId.identifier, 'delivered messages carry the initiator identifier')
})

t.test('portable and node crypto providers interoperate over a channel', async (t) => {
  const w = world(t)
  const D = await w.mk('D')
  startEcho(D)
  await new SecureChannels(D, { identity: SoftwareIdentity.generate(), crypto: 'portable' }).listen('secure', { allow: ['echo'] })
  const C = await w.mk('C')
  const ch = await new SecureChannels(C, { identity: SoftwareIdentity.generate(), crypto: 'node' }).connect(route('4#D', 'secure'))
  const r = await C.request([ch.address, local('echo')], Buffer.alloc(3000, 9))
  t.same(Buffer.from(r.payload), Buffer.alloc(3000, 9))
  // transport messages may be larger than Noise's 65535-byte stream limit (framed by the router)
  const big = Buffer.alloc(200 * 1024, 5)
  const r2 = await C.request([ch.address, local('echo')], big)
  t.ok(Buffer.from(r2.payload).equals(big), '200 KiB payload through the channel')
})

t.test('10,000 messages with a rekey every 100 arrive in order, intact', async (t) => {
  const w = world(t)
  const { D, cCh } = await pair(t, w, { rekeyInterval: 100 })
  const got: number[] = []
  let bad = 0
  D.startWorker('sink', {
    handleMessage: (_c, m) => {
      const b = Buffer.from(m.payload)
      const i = b.readUInt32BE(0)
      if (!b.subarray(4).equals(Buffer.alloc(b.length - 4, i & 0xff))) bad++
      got.push(i)
    },
  })
  const ch = await cCh.connect(route('4#D', 'secure'), { rekeyInterval: 100 })
  for (let i = 0; i < 10_000; i++) {
    const b = Buffer.alloc(4 + (i % 300), i & 0xff)
    b.writeUInt32BE(i, 0)
    cCh.node.send([ch.address, local('sink')], b)
    if (i % 500 === 499) await sleep(0)
  }
  await until(() => got.length === 10_000, 20_000, '10,000 messages')
  t.equal(bad, 0, 'intact')
  t.ok(got.every((v, i) => v === i), 'in order')
  t.equal(ch.stats.sent, 10_000)
})

/** A worker on C's node that sits on the route both ways and can change what passes. */
function tamperer(C: Node, onMessage: (m: Message, payload: Buffer) => Buffer[] | 'hold') {
  const held: { onward: readonly Address[]; ret: readonly Address[]; payload: Buffer }[] = []
  const me = local('tamper')
  C.startWorker(me, {
    handleMessage: (ctx, m) => {
      const out = onMessage(m, Buffer.from(m.payload))
      if (out === 'hold') {
        held.push({ onward: m.onward.slice(1), ret: [me, ...m.return], payload: Buffer.from(m.payload) })
        return
      }
      for (const p of out) ctx.send(m.onward.slice(1), p, { returnRoute: [me, ...m.return] })
    },
  }, { acceptsNetwork: true })
  return {
    release(order: (i: number) => number = (i) => i) {
      const list = held.splice(0)
      for (let i = 0; i < list.length; i++) {
        const h = list[order(i) % list.length]!
        C.send(h.onward, h.payload, { returnRoute: h.ret })
      }
    },
  }
}

const HANDSHAKE_ERRORS = /^(ERR_HANDSHAKE_FAILED|ERR_HANDSHAKE_TIMEOUT|ERR_IDENTITY_INVALID|ERR_CHANNEL_CLOSED|ERR_CHANNEL_MESSAGE)$/

t.test('a bit flip anywhere in a handshake message fails the handshake with a typed error', async (t) => {
  const w = world(t)
  const { D, C, cCh, listener } = await pair(t, w, { handshakeTimeout: 300 })
  let accepted = 0
  listener.on('channel', () => accepted++)
  listener.on('error', () => {})
  let target = { type: 0, bit: 0 }
  const sizes: Record<number, number> = {}
  tamperer(C, (_m, p) => {
    if (target.type === 0) sizes[p[0]!] = p.length // a clean run: learn the sizes
    else if (p[0] === target.type) p[target.bit >>> 3]! ^= 1 << (target.bit & 7)
    return [p]
  })
  const clean = await cCh.connect(route('tamper', '4#D', 'secure'))
  clean.close()
  await until(() => accepted === 1)
  t.ok(sizes[1]! > 32 && sizes[2]! > 96 && sizes[3]! > 64, `message sizes ${JSON.stringify(sizes)}`)
  const codes = new Map<string, number>()
  let tried = 0
  for (const type of [1, 2, 3]) {
    const bits = sizes[type]! * 8
    for (let k = 0; k < 24; k++) {
      const bit = Math.min(bits - 1, Math.floor((k * bits) / 24) + (k % 8))
      target = { type, bit }
      tried++
      try {
        const ch = await cCh.connect(route('tamper', '4#D', 'secure'), { handshakeTimeout: 300 })
        ch.close()
        t.fail(`a flipped bit ${bit} in message ${type} was accepted`)
      } catch (err) {
        if (!isThroughlineError(err)) throw err
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1)
        t.match(err.code, HANDSHAKE_ERRORS)
      }
    }
  }
  t.equal(accepted, 1, `no tampered handshake was accepted (${tried} tried; ${JSON.stringify(Object.fromEntries(codes))})`)
  await until(() => listener.halfOpen === 0, 2000, 'slots freed')
})

t.test('transport messages: bit flips and replays are dropped; reordering is accepted', async (t) => {
  const w = world(t)
  const { D, C, cCh } = await pair(t, w)
  const got: string[] = []
  D.startWorker('sink', { handleMessage: (_c, m) => void got.push(Buffer.from(m.payload).toString()) })
  let mode: 'pass' | 'flip' | 'replay' | 'hold' = 'pass'
  let flipBit = 0
  const tap = tamperer(C, (_m, p) => {
    if (p[0] !== MSG.TRANSPORT || mode === 'pass') return [p]
    if (mode === 'hold') return 'hold'
    if (mode === 'replay') return [p, Buffer.from(p)]
    const q = Buffer.from(p)
    const bit = flipBit % (q.length * 8)
    q[bit >>> 3]! ^= 1 << (bit & 7)
    return [q]
  })
  const ch = await cCh.connect(route('tamper', '4#D', 'secure'))
  const drops: DropEvent[] = []
  D.on('drop', (e: DropEvent) => drops.push(e))
  const send = (s: string): void => C.send([ch.address, local('sink')], Buffer.from(s))
  mode = 'flip'
  for (flipBit = 0; flipBit < 60 * 8; flipBit += 7) send(`flipped-${flipBit}`)
  await sleep(50)
  t.same(got, [], 'no tampered message delivered')
  t.ok(drops.length >= 60, `${drops.length} tampered messages dropped`)
  t.ok(drops.every((d) => /^(ERR_DECRYPT|ERR_REPLAY|ERR_CHANNEL_MESSAGE)$/.test(d.error?.code ?? '')), 'each with a typed error')
  mode = 'replay'
  drops.length = 0
  send('once')
  await until(() => got.length === 1)
  await sleep(20)
  t.same(got, ['once'], 'a replayed message is delivered once')
  t.equal(drops[0]?.error?.code, 'ERR_REPLAY')
  mode = 'hold'
  for (let i = 0; i < 20; i++) send(`r${i}`)
  await sleep(10)
  mode = 'pass'
  tap.release((i) => 19 - i)
  await until(() => got.length === 21)
  t.same(got.slice(1), Array.from({ length: 20 }, (_, i) => `r${19 - i}`), 'reordered messages within the window are all accepted')
  t.equal(ch.state, 'open', 'the channel survived the attacks')
  const r = await C.request([ch.address, local('echo')], Buffer.from('still ok'))
  t.equal(Buffer.from(r.payload).toString(), 'still ok')
})

t.test('a relay that substitutes its own static key is caught', async (t) => {
  const w = world(t)
  const { dId, cCh } = await pair(t, w)
  const M = await w.mk('M')
  // M terminates C's handshake with its own static key, and shows C the binding D gave M
  const mKeys = (await import('../src/channel/noise.ts')).generateKeyPair()
  let fromC: { msg1: Uint8Array; ret: readonly Address[] } | undefined
  const toD = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: (await import('../src/channel/noise.ts')).generateKeyPair(), prologue: PROLOGUE })
  M.startWorker('mitm', {
    handleMessage: (ctx, m) => {
      const p = m.payload
      if (p[0] === MSG.HANDSHAKE_1 && fromC === undefined) {
        fromC = { msg1: p.subarray(1), ret: m.return }
        ctx.send(route('4#D', 'secure'), frame(MSG.HANDSHAKE_1, toD.writeMessage(encodePayload1())))
      } else if (p[0] === MSG.HANDSHAKE_2 && fromC !== undefined) {
        const dPayload = decodeIdentityPayload(toD.readMessage(p.subarray(1)), 2)
        const toC = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: mKeys, prologue: PROLOGUE })
        toC.readMessage(fromC.msg1)
        ctx.send(fromC.ret, frame(MSG.HANDSHAKE_2, toC.writeMessage(encodeIdentityPayload(dPayload.binding))))
      }
    },
  }, { acceptsNetwork: true })
  const err = await cCh.connect(route('4#M', 'mitm')).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(isThroughlineError(err, 'ERR_IDENTITY_INVALID'), `rejected: ${(err as Error)?.message}`)
  t.match((err as Error).message, /another static key/)
  t.ok(dId.identifier)
})

t.test('trust policies: refusal is a typed error on both ends', async (t) => {
  const w = world(t)
  const { dId, cCh, listener } = await pair(t, w, { trust: trustIdentifiers(['I' + 'a'.repeat(40)]) })
  const listenerErrors: Error[] = []
  listener.on('error', (e: Error) => listenerErrors.push(e))
  // the responder refuses the initiator
  await t.rejects(cCh.connect(route('4#D', 'secure')), { code: 'ERR_TRUST_POLICY', message: /peer does not trust this identity/ })
  await until(() => listenerErrors.length === 1)
  t.match(listenerErrors[0], { code: 'ERR_TRUST_POLICY' })
  // the initiator refuses the responder
  const w2 = world(t)
  const p2 = await pair(t, w2)
  const errs2: Error[] = []
  p2.listener.on('error', (e: Error) => errs2.push(e))
  await t.rejects(p2.cCh.connect(route('4#D', 'secure'), { trust: trustPredicate(() => false, 'nobody') }), { code: 'ERR_TRUST_POLICY', message: /not trusted \(nobody\)/ })
  await until(() => errs2.length === 1)
  t.match(errs2[0], { code: 'ERR_CHANNEL_CLOSED', message: /POLICY_DENY/ })
  t.equal(p2.listener.halfOpen, 0)
  t.ok(dId)
})

t.test('half-open handshakes: timeout frees the slot; the cap refuses more', async (t) => {
  const w = world(t)
  const { C, listener } = await pair(t, w, { handshakeTimeout: 200, maxHalfOpen: 2 })
  const errors: Error[] = []
  listener.on('error', (e: Error) => errors.push(e))
  const drops: DropEvent[] = []
  ;(listener.channels.node).on('drop', (e: DropEvent) => drops.push(e))
  // an initiator that sends message 1 and never message 3
  C.startWorker('silent', { handleMessage: () => {} }, { acceptsNetwork: true })
  const start = (): void => {
    const hs = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: (listener.channels.staticKeyPair), prologue: PROLOGUE })
    C.send(route('4#D', 'secure'), frame(MSG.HANDSHAKE_1, hs.writeMessage(encodePayload1())), { returnRoute: route('silent') })
  }
  start()
  start()
  start()
  await until(() => listener.halfOpen === 2)
  await until(() => drops.some((d) => d.error?.code === 'ERR_HANDSHAKE_LIMIT'), 2000, 'cap')
  t.pass('the third half-open handshake was refused with ERR_HANDSHAKE_LIMIT')
  await until(() => listener.halfOpen === 0, 2000, 'timeout')
  t.equal(errors.length, 2)
  t.ok(errors.every((e) => isThroughlineError(e, 'ERR_HANDSHAKE_TIMEOUT')), 'each slot freed by ERR_HANDSHAKE_TIMEOUT')
})

t.test('close: encrypted, with a cause, seen on both ends; keepalive and idle timeout', async (t) => {
  const w = world(t)
  const { cCh, listener } = await pair(t, w, { keepaliveInterval: 30, idleTimeout: 150 })
  const responder = new Promise<SecureChannel>((resolve) => listener.once('channel', resolve))
  const ch = await cCh.connect(route('4#D', 'secure'), { keepaliveInterval: 30, idleTimeout: 150 })
  const rch = await responder
  await sleep(400)
  t.equal(ch.state, 'open', 'keepalives hold an idle channel open')
  const closed = new Promise<Error>((resolve) => rch.once('close', resolve))
  ch.close('NORMAL', 'done here')
  t.match(await closed, { code: 'ERR_CHANNEL_CLOSED', message: /closed by the peer \(NORMAL: done here\)/ })
  // a peer that goes silent is closed by the idle timeout
  const w2 = world(t)
  const p2 = await pair(t, w2, { keepaliveInterval: 0, idleTimeout: 150 })
  const c2 = await p2.cCh.connect(route('4#D', 'secure'), { keepaliveInterval: 0, idleTimeout: 0 })
  const idle = new Promise<Error>((resolve) => c2.once('close', resolve))
  const hold = setInterval(() => {}, 20) // channel timers are unref'd; keep the test process up
  t.teardown(() => clearInterval(hold))
  t.match(await idle, { code: 'ERR_CHANNEL_CLOSED', message: /IDLE_TIMEOUT/ })
  const l: SecureListener = p2.listener
  t.equal(l.channelsOpen, 0)
})

t.test('decrypted messages reach only what the listener allows', async (t) => {
  const w = world(t)
  const { D, C, cCh } = await pair(t, w)
  D.startWorker('private', { handleMessage: () => { t.fail('must not be reached') } })
  const drops: DropEvent[] = []
  D.on('drop', (e: DropEvent) => drops.push(e))
  const ch = await cCh.connect(route('4#D', 'secure'))
  C.send([ch.address, local('private')], Buffer.from('x'))
  await until(() => drops.length === 1)
  t.equal(drops[0]!.reason, 'flow-denied')
  t.match(drops[0]!.error?.message, /secure listener secure does not allow 0#private/)
})

t.test('identities and static keys from a vault: a P-256 identity talks to an Ed25519 one', async (t) => {
  const { SoftwareVault, vaultIdentity } = await import('../src/vault/index.ts')
  const w = world(t)
  const vault = SoftwareVault.memory()
  const idHandle = await vault.generateSigningKey('p256')
  const staticHandle = await vault.generateX25519()
  const deviceId = await vaultIdentity(vault, idHandle)
  const D = await w.mk('D')
  startEcho(D)
  const dCh = new SecureChannels(D, { identity: deviceId, staticKeyPair: await vault.x25519KeyPair(staticHandle) })
  await dCh.listen('secure', { allow: ['echo'] })
  t.same(dCh.staticKeyPair.publicKey, await vault.x25519PublicKey(staticHandle))
  const C = await w.mk('C')
  const ch = await new SecureChannels(C, { identity: SoftwareIdentity.generate() }).connect(route('4#D', 'secure'), { trust: trustIdentifiers([deviceId.identifier]) })
  t.equal(ch.peer?.alg, 'p256')
  const r = await C.request([ch.address, local('echo')], Buffer.from('from a vault'))
  t.equal(Buffer.from(r.payload).toString(), 'from a vault')
})
