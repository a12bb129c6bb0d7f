// Attestation bound into secure channels (docs/attestation.md; the §B.9 matrix with the sim
// attester): evidence in the handshake and in a post-handshake gate, one-way and mutual; passports
// and background checks through a verifier service; every fault knob with its cause on both ends;
// replayed and relayed evidence; streaming re-attestation; passport expiry with and without refresh.
// The memory transport holds no handle open and channel timers are unref'd: keep the loop alive.
import t, { type Test } from 'tap'
import { Node, silentLogger, local, route, type Message } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { startEcho } from '../src/services/index.ts'
import { PassportClient, RemoteVerifier, VerifierService } from '../src/services/verifier.ts'
import { SecureChannels, SoftwareIdentity, resolveRoute, trustPredicate, type SecureChannel, type SecureListener, type AttestationOptions } from '../src/channel/index.ts'
import { ReferenceValues, SimAttester, SimPlatform, SimRoot, Verifier, VerifierKey, type Attester, type Evidence, type SimFaults } from '../src/attest/index.ts'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import { sleep, until } from './helpers/wait.ts'
import fc from 'fast-check'
import { createBinding, createHandshake, generateKeyPair, PROLOGUE } from '../src/channel/index.ts'
import { encodeIdentityPayload, frame, MSG } from '../src/channel/messages.ts'

const alive = setInterval(() => {}, 1_000)
t.teardown(() => clearInterval(alive))

interface World {
  net: MemoryNetwork
  root: SimRoot
  mk(name: string): Promise<Node>
  /** A sim platform + attester for a device. */
  device(options?: { svn?: number }): { platform: SimPlatform; attester: SimAttester }
  /** A local verifier trusting the sim root, with reference values for `platforms`. */
  verifier(platforms: SimPlatform[], options?: { minSvn?: number }): Verifier
}

function world(t: Test): World {
  const net = new MemoryNetwork()
  const root = SimRoot.generate('test-root')
  return {
    net,
    root,
    async mk(name) {
      const node = await new Node({ name, logger: silentLogger }).start()
      node.addTransport(new MemoryTransport(node, { network: net }))
      await (node.transport(4) as MemoryTransport).listen(name, { allow: ['echo', 'secure', 'secure-attested', 'secure-m*', 'sink', 'verifier', 'evil'], transit: true })
      t.teardown(() => node.stop())
      return node
    },
    device(options = {}) {
      const platform = new SimPlatform({ root, ...options })
      return { platform, attester: new SimAttester(platform) }
    },
    verifier(platforms, options = {}) {
      const rv = new ReferenceValues(platforms.map((p, i) => p.referenceSet(`platform-${i}`)))
      return new Verifier({ id: 'test-verifier', trustAnchors: { simRoots: [root.publicKeySpki] }, referenceValues: rv, policy: { id: 'test', trustSim: true, ...options } })
    },
  }
}

interface Pair {
  D: Node
  C: Node
  dCh: SecureChannels
  cCh: SecureChannels
  listener: SecureListener
  /** Errors of failed handshakes at the listener. */
  listenerErrors: ThroughlineError[]
  /** Messages that reached D's sink (with the peer metadata). */
  sunk: Message[]
}

/** D (listener `secure`, device) and C (initiator), each with its own attestation options. */
async function pair(_t: Test, w: World, dAttest: AttestationOptions, cNodeAttest: AttestationOptions = {}, listenExtra: Record<string, unknown> = {}): Promise<Pair> {
  const D = await w.mk(`D${Math.random().toString(16).slice(2, 8)}`)
  startEcho(D)
  const sunk: Message[] = []
  D.startWorker('sink', { handleMessage: (_c, m) => void sunk.push(m) })
  const dCh = new SecureChannels(D, { identity: SoftwareIdentity.generate(), attestation: { attesters: dAttest.attesters ?? [], ...(dAttest.passport ? { passport: dAttest.passport } : {}) } })
  const listener = await dCh.listen('secure', { allow: ['echo', 'sink'], attestation: dAttest, handshakeTimeout: 5_000, ...listenExtra })
  const listenerErrors: ThroughlineError[] = []
  listener.on('error', (e: ThroughlineError) => listenerErrors.push(e))
  const C = await w.mk(`C${Math.random().toString(16).slice(2, 8)}`)
  const cCh = new SecureChannels(C, { identity: SoftwareIdentity.generate(), attestation: cNodeAttest })
  return { D, C, dCh, cCh, listener, listenerErrors, sunk }
}

async function connect(p: Pair, attestation: AttestationOptions, extra: Record<string, unknown> = {}): Promise<SecureChannel> {
  return p.cCh.connect(memRoute(p.D, 'secure'), { attestation, handshakeTimeout: 5_000, ...extra })
}

function memRoute(node: Node, service: string) {
  return route(`4#${node.name}`, service)
}

async function echoThrough(C: Node, ch: SecureChannel, text = 'hello'): Promise<string> {
  const reply = await C.request([ch.address, local('echo')], Buffer.from(text), { timeout: 3_000 })
  return Buffer.from(reply.payload).toString()
}

function causeOf(err: unknown): unknown {
  return isThroughlineError(err) ? err.details?.['cause'] : undefined
}

t.test('handshake evidence: responder-only, initiator-only, mutual; post-handshake gate', async (t) => {
  const w = world(t)
  for (const mode of ['handshake', 'post-handshake'] as const) {
    await t.test(`${mode}: the initiator requires sim of the responder`, async (t) => {
      const dev = w.device()
      const p = await pair(t, w, { attesters: [dev.attester] })
      const ch = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform]), mode })
      t.equal(ch.attestation?.status, 'affirming')
      t.equal(ch.attestation?.suite, 'sim')
      t.same(Buffer.from(ch.attestation!.keyAttestation.pub), Buffer.from(p.dCh.staticKeyPair.publicKey), 'the result is about the static key of this channel')
      t.equal(ch.peer?.attributes['attest.status'], 'affirming', 'the result is an attribute of the peer')
      t.equal(await echoThrough(p.C, ch), 'hello')
    })
    await t.test(`${mode}: the responder requires sim of the initiator`, async (t) => {
      const cdev = w.device()
      const p = await pair(t, w, { require: ['sim'], verifier: w.verifier([cdev.platform]), mode }, { attesters: [cdev.attester] })
      const ch = await connect(p, {})
      t.equal(ch.attestation, undefined, 'the initiator required nothing')
      t.equal(await echoThrough(p.C, ch), 'hello')
      await p.C.send([ch.address, local('sink')], Buffer.from('x'))
      await until(() => p.sunk.length === 1)
      t.equal(p.sunk[0]!.local.peer?.attributes?.['attest.status'], 'affirming', 'delivered messages carry the attestation result of the peer')
      t.equal(p.sunk[0]!.local.peer?.attributes?.['attest.suite'], 'sim')
    })
    await t.test(`${mode}: mutual`, async (t) => {
      const ddev = w.device()
      const cdev = w.device()
      const v = w.verifier([ddev.platform, cdev.platform])
      const p = await pair(t, w, { attesters: [ddev.attester], require: ['sim'], verifier: v, mode }, { attesters: [cdev.attester] })
      const opened = new Promise<SecureChannel>((r) => p.listener.once('channel', r))
      const ch = await connect(p, { require: ['sim'], verifier: v, mode })
      const dSide = await opened
      t.equal(ch.attestation?.status, 'affirming')
      t.equal(dSide.attestation?.status, 'affirming')
      t.same(Buffer.from(dSide.attestation!.keyAttestation.pub), Buffer.from(p.cCh.staticKeyPair.publicKey))
      t.equal(await echoThrough(p.C, ch), 'hello')
    })
  }
})

t.test('the matrix: {evidence, passport, background check} × {initiator-only, responder-only, mutual} × {handshake, post-handshake}', async (t) => {
  const w = world(t)
  const ddev = w.device()
  const cdev = w.device()
  const local = w.verifier([ddev.platform, cdev.platform])
  // V: verifier service; `secure` for background checks, `secure-attested` issues passports.
  const V = await w.mk('Vm')
  const vKey = VerifierKey.generate()
  const vCh = new SecureChannels(V, { identity: SoftwareIdentity.generate() })
  await vCh.listen('secure', { allow: ['verifier'] })
  const attested = await vCh.listen('secure-attested', { allow: ['verifier'], attestation: { require: ['sim'], verifier: local } })
  new VerifierService(V, { verifier: local, signer: vKey, listener: attested })

  // D and C can both prove themselves with evidence and with a passport.
  const prover = (node: Node, ch: () => SecureChannels) =>
    new PassportClient(node, { route: async () => (await resolveRoute('/memory/Vm/secure/secure-attested/service/verifier', ch())).route })
  const D = await w.mk('Dm')
  startEcho(D)
  let dCh!: SecureChannels
  dCh = new SecureChannels(D, { identity: SoftwareIdentity.generate(), attestation: { attesters: [ddev.attester], passport: prover(D, () => dCh) } })
  const C = await w.mk('Cm')
  let cCh!: SecureChannels
  cCh = new SecureChannels(C, { identity: SoftwareIdentity.generate(), attestation: { attesters: [cdev.attester], passport: prover(C, () => cCh) } })

  const requirement = (node: Node, channels: SecureChannels, model: string, mode: 'handshake' | 'post-handshake'): AttestationOptions => {
    if (model === 'evidence') return { require: ['sim'], verifier: local, mode }
    if (model === 'passport') return { require: ['passport'], passportIssuers: vKey.trusted(), mode }
    return { require: ['sim'], verifier: new RemoteVerifier(node, { route: async () => (await resolveRoute('/memory/Vm/secure/secure/service/verifier', channels)).route, keys: vKey.trusted() }), mode }
  }
  let n = 0
  for (const model of ['evidence', 'passport', 'background'] as const) {
    for (const who of ['initiator-only', 'responder-only', 'mutual'] as const) {
      for (const mode of ['handshake', 'post-handshake'] as const) {
        await t.test(`${model} ${who} ${mode}`, async (t) => {
          const name = `secure-m${n++}`
          const dReq = who === 'initiator-only' ? {} : requirement(D, dCh, model, mode)
          const cReq = who === 'responder-only' ? {} : requirement(C, cCh, model, mode)
          const listener = await dCh.listen(name, { allow: ['echo'], attestation: dReq })
          const opened = new Promise<SecureChannel>((r) => listener.once('channel', r))
          const ch = await cCh.connect(memRoute(D, name), { attestation: cReq })
          const dSide = await opened
          if (who !== 'responder-only') {
            t.equal(ch.attestation?.status, 'affirming', 'the initiator accepted the responder')
            t.equal(ch.attestation?.suite, 'sim', 'the evidence suite (a passport carries the result of sim evidence too)')
            t.same(Buffer.from(ch.attestation!.keyAttestation.pub), Buffer.from(dCh.staticKeyPair.publicKey))
          } else t.equal(ch.attestation, undefined)
          if (who !== 'initiator-only') {
            t.equal(dSide.attestation?.status, 'affirming', 'the responder accepted the initiator')
            t.same(Buffer.from(dSide.attestation!.keyAttestation.pub), Buffer.from(cCh.staticKeyPair.publicKey))
          } else t.equal(dSide.attestation, undefined)
          t.equal(await echoThrough(C, ch), 'hello', 'data flows once both ends accepted')
          ch.close()
        })
      }
    }
  }
})

t.test('evidence privacy: a responder with earlyEvidence never keeps evidence out of message 2; the initiator appraises it in a gate round', async (t) => {
  const w = world(t)
  const dev = w.device()
  const contexts: string[] = []
  const spy: Attester = { suite: 'sim', attest: (ctx, signal) => (contexts.push(ctx.role), dev.attester.attest(ctx, signal)) }
  const p = await pair(t, w, { attesters: [spy], earlyEvidence: 'never' })
  const opened = new Promise<SecureChannel>((r) => p.listener.once('channel', r))
  const ch = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform]) }) // handshake mode asked
  await opened
  t.equal(ch.attestation?.status, 'affirming', 'appraised all the same')
  t.equal(ch.attestationRounds, 1, 'in one round after the handshake, not in message 2')
  t.same(contexts, ['R'], 'the device produced evidence once')
  t.equal(await echoThrough(p.C, ch), 'hello')
  dev.attester.faults.corruptSignature = true
  const err = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform]) }).catch((e: unknown) => e)
  t.equal(causeOf(err), 'ATTEST_VERIFIER_FAILED', 'a failing deferred round still refuses the channel')
  await until(() => p.listenerErrors.length === 1)
  t.equal(causeOf(p.listenerErrors[0]), 'ATTEST_VERIFIER_FAILED', 'on both ends')
})

t.test('no attestation required: plain channels are unchanged; suites that do not match fail on both ends', async (t) => {
  const w = world(t)
  const dev = w.device()
  const p = await pair(t, w, { attesters: [dev.attester] })
  const ch = await connect(p, {})
  t.equal(ch.attestation, undefined)
  t.equal(await echoThrough(p.C, ch), 'hello')

  const err = await connect(p, { require: ['tpm2'], verifier: w.verifier([]) }).catch((e: unknown) => e)
  t.match(err, { code: 'ERR_ATTEST_NO_MATCH' })
  t.equal(causeOf(err), 'NO_ATTEST_MATCH')
  await until(() => p.listenerErrors.length === 1)
  t.equal(causeOf(p.listenerErrors[0]), 'NO_ATTEST_MATCH', 'the responder names the same cause')
  t.match(p.listenerErrors[0]!.message, /no matching attestation suite \(prover side\)/)

  await t.rejects(p.dCh.listen('other', { attestation: { require: ['sim'] } }), { code: 'ERR_INVALID_ARGUMENT', message: /needs a verifier/ })
  await t.rejects(connect(p, { require: ['passport'] }), { code: 'ERR_INVALID_ARGUMENT', message: /passportIssuers/ })
  await t.rejects(connect(p, { require: ['sgx' as never], verifier: w.verifier([]) }), { code: 'ERR_INVALID_ARGUMENT', message: /unknown attestation suite/ })

  const q = await pair(t, w, { require: ['sim'], verifier: w.verifier([]) })
  const err2 = await q.cCh.connect(memRoute(q.D, 'secure'), { handshakeTimeout: 5_000 }).catch((e: unknown) => e)
  t.equal(causeOf(err2), 'NO_ATTEST_MATCH', 'the initiator offers nothing the responder requires')
  await until(() => q.listenerErrors.length === 1)
  t.equal(causeOf(q.listenerErrors[0]), 'NO_ATTEST_MATCH')
})

const KNOBS: [keyof SimFaults, unknown, string, string?][] = [
  ['corruptSignature', true, 'ATTEST_VERIFIER_FAILED', 'bad_signature'],
  ['wrongHandle', true, 'ATTEST_VERIFIER_FAILED', 'handle_mismatch'],
  ['foreignChannelEvidence', true, 'ATTEST_VERIFIER_FAILED', 'handle_mismatch'],
  ['untrustedRoot', true, 'ATTEST_VERIFIER_FAILED', 'untrusted_root'],
  ['expiredDeviceCert', true, 'ATTEST_VERIFIER_FAILED', 'endorsement_expired'],
  ['pcrTamper', true, 'ATTEST_VERIFIER_FAILED', 'pcr_digest_mismatch'],
  ['logTamper', true, 'ATTEST_VERIFIER_FAILED', 'log_replay_mismatch'],
  ['logGap', true, 'ATTEST_VERIFIER_FAILED', 'log_cursor_gap'],
  ['clockUnsafe', true, 'ATTEST_VERIFIER_FAILED', 'clock_unsafe'],
  ['unknownFormat', true, 'ATTEST_VERIFIER_FAILED', 'unknown_format'],
  ['debug', true, 'POLICY_DENY', 'debug_enabled'],
  ['svnBelowMin', true, 'POLICY_DENY', 'svn_below_min'],
  ['throw', true, 'ATTEST_PROVER_FAILED'],
  ['delayMs', 3_000, 'TIMEOUT'],
]

t.test('every fault knob gives its cause on both ends, and nothing is delivered', async (t) => {
  const w = world(t)
  for (const [knob, value, cause, reason] of KNOBS) {
    await t.test(`${knob} → ${cause}${reason ? ` (${reason})` : ''}`, async (t) => {
      const dev = w.device()
      ;(dev.attester.faults as unknown as Record<string, unknown>)[knob] = value
      const timeout = knob === 'delayMs' ? 600 : 5_000
      const p = await pair(t, w, { attesters: [dev.attester] }, {}, { handshakeTimeout: timeout })
      const err = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform], { minSvn: 1 }) }, { handshakeTimeout: timeout }).catch((e: unknown) => e)
      t.ok(isThroughlineError(err), `the initiator fails with a typed error (${String((err as Error).message)})`)
      t.equal(causeOf(err), cause, 'initiator cause')
      if (reason !== undefined) t.equal((err as ThroughlineError).details?.['reason'], reason, 'the reason names the failed check')
      await until(() => p.listenerErrors.length === 1, 5_000)
      t.equal(causeOf(p.listenerErrors[0]), cause, 'responder cause')
      t.equal(p.listener.channelsOpen, 0)
      t.equal(p.sunk.length, 0)
    })
  }
})

t.test('hostile attestation payloads: a typed error for each, nothing delivered, the node keeps serving', async (t) => {
  const w = world(t)
  const dev = w.device()
  const p = await pair(t, w, { attesters: [dev.attester] })
  // "evil" answers handshake message 1 with a genuine message 2 (valid identity binding) whose
  // attestation field is whatever the test puts there.
  const evilId = SoftwareIdentity.generate()
  const evilKeys = generateKeyPair()
  const binding = await createBinding(evilId, evilKeys.publicKey)
  let attest: unknown = null
  p.D.startWorker(
    'evil',
    {
      handleMessage: (ctx, m) => {
        if (m.payload[0] !== MSG.HANDSHAKE_1) return
        const hs = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: evilKeys, prologue: PROLOGUE })
        hs.readMessage(m.payload.subarray(1))
        let payload: Uint8Array
        try {
          payload = encodeIdentityPayload(binding, attest)
        } catch {
          payload = encodeIdentityPayload(binding, null)
        }
        ctx.send(m.return, frame(MSG.HANDSHAKE_2, hs.writeMessage(payload.length > 60_000 ? encodeIdentityPayload(binding, 'too big') : payload)))
      },
    },
    { acceptsNetwork: true },
  )
  const vKey = VerifierKey.generate()
  const options: AttestationOptions = { require: ['sim', 'passport'], verifier: w.verifier([dev.platform]), passportIssuers: vKey.trusted(), timeout: 2_000 }
  const evidence = (body: unknown, extra: Record<string, unknown> = {}) => ({ v: 1, chosen: 'sim', ev: { suite: 'sim', fmt: 'sim-tpm2-v1', handleAlg: 'sha256/v1', body, ...extra } })
  const cases: [string, unknown][] = [
    ['a string', 'junk'],
    ['a number', 42],
    ['version 2', { v: 2, chosen: 'sim' }],
    ['an unknown chosen suite', { v: 1, chosen: 'sgx' }],
    ['no evidence', { v: 1, chosen: 'sim' }],
    ['evidence that is a string', { v: 1, chosen: 'sim', ev: 'x' }],
    ['a random body', evidence(new Uint8Array(100).fill(7))],
    ['a body of msgpack junk', evidence(new Uint8Array([0x93, 1, 2]))],
    ['a log of 1,100 entries (over the 1,024 limit)', evidence(new Uint8Array(10), { log: { from: 0, entries: Array.from({ length: 1100 }, () => ({})) } })],
    ['a negative log start', evidence(new Uint8Array(10), { log: { from: -1, entries: [] } })],
    ['10 endorsements', evidence(new Uint8Array(10), { endorsements: Array.from({ length: 10 }, () => new Uint8Array(8)) })],
    ['a passport that is not a token', { v: 1, chosen: 'passport', ar: 'a.b.c' }],
    ['a passport of 9,000 characters', { v: 1, chosen: 'passport', ar: 'x'.repeat(9_000) }],
    ['100 supported suites', { v: 1, supported: Array.from({ length: 100 }, () => 'sim') }],
  ]
  const refuse = async (what: string): Promise<void> => {
    const err = await p.cCh.connect(memRoute(p.D, 'evil'), { attestation: options, handshakeTimeout: 3_000 }).catch((e: unknown) => e)
    t.ok(isThroughlineError(err) && err.code !== 'ERR_HANDSHAKE_TIMEOUT', `${what}: ${String((err as Error)?.message).slice(0, 120)}`)
  }
  for (const [what, value] of cases) {
    attest = value
    await refuse(what)
  }
  await fc.assert(
    fc.asyncProperty(fc.anything({ maxDepth: 3, withTypedArray: true }), async (value) => {
      attest = value
      const err = await p.cCh.connect(memRoute(p.D, 'evil'), { attestation: options, handshakeTimeout: 3_000 }).catch((e: unknown) => e)
      return isThroughlineError(err) && err.code !== 'ERR_HANDSHAKE_TIMEOUT'
    }),
    { numRuns: 150 },
  )
  const ch = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform]) })
  t.equal(await echoThrough(p.C, ch), 'hello', 'the node keeps serving')
  t.equal(p.sunk.length, 0)
})

t.test('replayed evidence, evidence from another channel or device, key substitution: all rejected', async (t) => {
  const w = world(t)
  const dev = w.device()
  const v = w.verifier([dev.platform])
  const p = await pair(t, w, { attesters: [dev.attester] })
  // A first channel captures D's genuine evidence (as any initiator can).
  let captured: Evidence | undefined
  const capture = { appraise: async (r: { evidence: Evidence }) => ((captured = r.evidence), v.appraise(r as never)) }
  const ch1 = await connect(p, { require: ['sim'], verifier: capture as never })
  t.equal(ch1.attestation?.status, 'affirming')
  t.ok(captured)

  await t.test('old message-2 evidence in a new handshake (reuseLastEvidence)', async (t) => {
    dev.attester.faults.reuseLastEvidence = true
    const err = await connect(p, { require: ['sim'], verifier: v }).catch((e: unknown) => e)
    dev.attester.faults.reuseLastEvidence = false
    t.equal(causeOf(err), 'ATTEST_VERIFIER_FAILED')
    t.equal((err as ThroughlineError).details?.['reason'], 'handle_mismatch')
  })

  await t.test("a rogue device M presents D's genuine evidence in its own channel (relay / key substitution)", async (t) => {
    const replaying: Attester = { suite: 'sim', attest: async () => captured! }
    const m = await pair(t, w, { attesters: [replaying] })
    const err = await connect(m, { require: ['sim'], verifier: v }).catch((e: unknown) => e)
    t.equal(causeOf(err), 'ATTEST_VERIFIER_FAILED')
    t.equal((err as ThroughlineError).details?.['reason'], 'handle_mismatch', "D's evidence is bound to D's static key and D's session, not M's")
    await until(() => m.listenerErrors.length === 1)
    t.equal(causeOf(m.listenerErrors[0]), 'ATTEST_VERIFIER_FAILED')
  })

  await t.test('attesters refuse handles that a channel did not derive', async (t) => {
    await t.rejects(dev.attester.attest({ role: 'R', suite: 'sim', handle: new Uint8Array(32), logFrom: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  })
})

t.test('trust policies see the attestation attributes (ABAC)', async (t) => {
  const w = world(t)
  const cdev = w.device()
  const v = w.verifier([cdev.platform], { minSvn: 1 })
  const p = await pair(
    t,
    w,
    { require: ['sim'], verifier: v, minStatus: 'warning' },
    { attesters: [cdev.attester] },
    { trust: trustPredicate((peer) => peer.attributes['attest.status'] === 'affirming', 'attest.status = affirming') },
  )
  const ch = await connect(p, {})
  t.equal(await echoThrough(p.C, ch), 'hello')
  cdev.attester.faults.svnBelowMin = true
  const err = await connect(p, {}).catch((e: unknown) => e)
  t.match(err, { code: 'ERR_TRUST_POLICY' }, 'a warning peer passes the attestation minimum but not the worker policy')
})

t.test('streaming re-attestation: rounds pass, a PCR change at run time closes the channel on both ends', async (t) => {
  const w = world(t)
  const dev = w.device()
  const v = w.verifier([dev.platform])
  const p = await pair(t, w, { attesters: [dev.attester] })
  const opened = new Promise<SecureChannel>((r) => p.listener.once('channel', r))
  const ch = await connect(p, { require: ['sim'], verifier: v, reattestInterval: 200 })
  const dSide = await opened
  const first = ch.attestation!
  const next = await ch.reattest()
  t.equal(next.status, 'affirming', 'an on-demand round passes')
  t.not(Buffer.from(next.nonce).toString('hex'), Buffer.from(first.nonce).toString('hex'), 'with a new handle')
  await until(() => (ch.attestation?.iat ?? 0) > next.iat, 3_000)
  t.pass('interval rounds pass')
  t.equal(await echoThrough(p.C, ch), 'hello')

  const closedC = new Promise<ThroughlineError>((r) => ch.once('close', r))
  const closedD = new Promise<ThroughlineError>((r) => dSide.once('close', r))
  const changedAt = Date.now()
  dev.platform.extend(10, Buffer.alloc(32, 0xee)) // an unlogged change of the app PCR
  const [ec, ed] = await Promise.all([closedC, closedD])
  t.ok(Date.now() - changedAt < 200 + 1_000, `closed within one interval (+ a round) (${Date.now() - changedAt} ms)`)
  t.equal(causeOf(ec), 'ATTEST_VERIFIER_FAILED')
  t.equal(causeOf(ed), 'ATTEST_VERIFIER_FAILED', 'the device learns why')
  t.match(ed.message, /closed by the peer/)
})

t.test('clockRollback: a later round whose TPM clock went back closes the channel on both ends', async (t) => {
  const w = world(t)
  const dev = w.device()
  const p = await pair(t, w, { attesters: [dev.attester] })
  const opened = new Promise<SecureChannel>((r) => p.listener.once('channel', r))
  const ch = await connect(p, { require: ['sim'], verifier: w.verifier([dev.platform]) })
  const dSide = await opened
  t.equal((await ch.reattest()).status, 'affirming', 'a round with the clock moving forward passes')
  const closedD = new Promise<ThroughlineError>((r) => dSide.once('close', r))
  dev.attester.faults.clockRollback = true
  const err = await ch.reattest().catch((e: unknown) => e)
  t.match(err, { code: 'ERR_ATTEST_VERIFIER_FAILED' }, `the round fails (${String((err as Error).message)})`)
  t.equal((err as ThroughlineError).details?.['reason'], 'clock_check_failed')
  t.equal(ch.state, 'closed')
  t.equal(causeOf(await closedD), 'ATTEST_VERIFIER_FAILED', 'the device is told why')
})

t.test('passport: issued by a verifier service, checked, refreshed in the channel; expiry without refresh closes', async (t) => {
  const w = world(t)
  const dev = w.device()
  const V = await w.mk('V')
  const vKey = VerifierKey.generate()
  const vId = SoftwareIdentity.generate()
  const vCh = new SecureChannels(V, { identity: vId })
  const verifier = w.verifier([dev.platform])
  const shortLived = new Verifier({ id: 'short', trustAnchors: { simRoots: [w.root.publicKeySpki] }, referenceValues: verifier.referenceValues, policy: { id: 'test', trustSim: true }, resultTtlMs: 800 })
  await vCh.listen('secure', { allow: ['verifier'] })
  const attested = await vCh.listen('secure-attested', { allow: ['verifier'], attestation: { require: ['sim'], verifier: shortLived } })
  new VerifierService(V, { verifier: shortLived, signer: vKey, listener: attested })

  // D gets its passport over a channel that attests it to V.
  const D = await w.mk('Dp')
  startEcho(D)
  const dCh = new SecureChannels(D, { identity: SoftwareIdentity.generate(), attestation: { attesters: [dev.attester] } })
  const toV = async () => (await resolveRoute(`/memory/V/secure/secure-attested/service/verifier`, dCh)).route
  let vRoute: Awaited<ReturnType<typeof toV>> | undefined
  const passport = new PassportClient(D, { route: async () => (vRoute ??= await toV()) })
  await dCh.listen('secure', { allow: ['echo'], attestation: { passport } })
  const C = await w.mk('Cp')
  const cCh = new SecureChannels(C, { identity: SoftwareIdentity.generate() })

  const ch = await cCh.connect(memRoute(D, 'secure'), { attestation: { require: ['passport'], passportIssuers: vKey.trusted(), renewalThreshold: 0.5 } })
  t.equal(ch.attestation?.status, 'affirming')
  t.equal(ch.attestation?.verifierId, 'short')
  const firstExp = ch.attestation!.exp
  await sleep(1_600) // two lifetimes: refreshed in the channel
  t.equal(ch.state, 'open', 'the channel outlived its first passport')
  t.ok(ch.attestation!.exp > firstExp, 'with a fresh passport')
  t.equal(await echoThrough(C, ch), 'hello')

  await t.test('a stale passport (no refresh) closes with NO_VALID_RESULT', async (t) => {
    const stale = await passport.token()
    const D2 = await w.mk('Dp2')
    startEcho(D2)
    const d2Ch = new SecureChannels(D2, { identity: SoftwareIdentity.generate(), staticKeyPair: dCh.staticKeyPair })
    await d2Ch.listen('secure', { allow: ['echo'], attestation: { passport: { token: async () => stale } } })
    const ch2 = await cCh.connect(memRoute(D2, 'secure'), { attestation: { require: ['passport'], passportIssuers: vKey.trusted(), renewalThreshold: 0.5, maxClockSkew: 0 } })
    const closed = await new Promise<ThroughlineError>((r) => ch2.once('close', r))
    t.equal(causeOf(closed), 'NO_VALID_RESULT')
  })

  await t.test('a passport about another key is refused', async (t) => {
    const other = await w.mk('Dp3')
    const oCh = new SecureChannels(other, { identity: SoftwareIdentity.generate() })
    await oCh.listen('secure', { allow: ['echo'], attestation: { passport } }) // D's passport, another static key
    const err = await cCh.connect(memRoute(other, 'secure'), { attestation: { require: ['passport'], passportIssuers: vKey.trusted() } }).catch((e: unknown) => e)
    t.equal(causeOf(err), 'ATTEST_VERIFIER_FAILED')
    t.equal((err as ThroughlineError).details?.['reason'], 'key_binding')
  })
})

t.test('background check through a verifier service; a stopped verifier gives VERIFIER_UNAVAILABLE in time', async (t) => {
  const w = world(t)
  const dev = w.device()
  const V = await w.mk('Vb')
  const vKey = VerifierKey.generate()
  const vCh = new SecureChannels(V, { identity: SoftwareIdentity.generate() })
  await vCh.listen('secure', { allow: ['verifier'] })
  new VerifierService(V, { verifier: w.verifier([dev.platform]), signer: vKey })

  const p = await pair(t, w, { attesters: [dev.attester] })
  const remote = new RemoteVerifier(p.C, { route: async () => (await resolveRoute('/memory/Vb/secure/secure/service/verifier', p.cCh)).route, keys: vKey.trusted(), timeout: 800 })
  const ch = await connect(p, { require: ['sim'], verifier: remote })
  t.equal(ch.attestation?.status, 'affirming')
  t.equal(ch.attestation?.verifierId, 'test-verifier', 'the result came from the verifier service')
  t.equal(await echoThrough(p.C, ch), 'hello')

  dev.attester.faults.corruptSignature = true
  const bad = await connect(p, { require: ['sim'], verifier: remote }).catch((e: unknown) => e)
  dev.attester.faults.corruptSignature = false
  t.equal(causeOf(bad), 'ATTEST_VERIFIER_FAILED', 'the service appraises; the relying party enforces')

  await V.stop()
  const started = Date.now()
  const err = await connect(p, { require: ['sim'], verifier: remote }).catch((e: unknown) => e)
  const took = Date.now() - started
  t.match(err, { code: 'ERR_VERIFIER_UNAVAILABLE' })
  t.equal(causeOf(err), 'VERIFIER_UNAVAILABLE')
  t.ok(took < 800 + 1_500, `within the configured timeout (${took} ms), never a hang`)
  await until(() => p.listenerErrors.length === 2) // [0] is the corrupt signature above
  t.equal(causeOf(p.listenerErrors[1]), 'VERIFIER_UNAVAILABLE', 'the device learns the cause too')

  // A verifier that is up but never answers (swallows requests): the timeout bounds the wait.
  const S = await w.mk('Vs')
  const sCh = new SecureChannels(S, { identity: SoftwareIdentity.generate() })
  await sCh.listen('secure', { allow: ['verifier'] })
  S.startWorker('verifier', { handleMessage: () => {} })
  const silent = new RemoteVerifier(p.C, { route: async () => (await resolveRoute('/memory/Vs/secure/secure/service/verifier', p.cCh)).route, keys: vKey.trusted(), timeout: 500 })
  const t0 = Date.now()
  const err2 = await connect(p, { require: ['sim'], verifier: silent }).catch((e: unknown) => e)
  const took2 = Date.now() - t0
  t.equal(causeOf(err2), 'VERIFIER_UNAVAILABLE', `a silent verifier: VERIFIER_UNAVAILABLE after ${took2} ms`)
  t.ok(took2 < 500 + 1_500, 'bounded by the configured timeout, never a hang')
})

t.test('a verifier service refuses admin requests from non-admins and takes them from admins', async (t) => {
  const w = world(t)
  const V = await w.mk('Va')
  const admin = SoftwareIdentity.generate()
  const vCh = new SecureChannels(V, { identity: SoftwareIdentity.generate() })
  await vCh.listen('secure', { allow: ['verifier'] })
  const verifier = w.verifier([])
  new VerifierService(V, { verifier, signer: VerifierKey.generate(), admins: [admin.identifier] })
  const { verifierRequest } = await import('../src/services/verifier.ts')
  const A = await w.mk('Aa')
  const aCh = new SecureChannels(A, { identity: admin })
  const { route } = await resolveRoute('/memory/Va/secure/secure/service/verifier', aCh)
  await verifierRequest(A, route, { op: 'setReferenceValues', name: 'fw-b', pcrs: { 0: 'ab'.repeat(32) } })
  t.same(verifier.referenceValues.list().map((s) => s.name), ['fw-b'])
  for (const policy of [{ id: 'x', minSvn: -1 }, { id: 'x', debug: 'maybe' }, { id: '' }, { id: 'x', surprise: 1 }, 'junk']) {
    const err = await verifierRequest(A, route, { op: 'setPolicy', policy }).catch((e: unknown) => e)
    t.equal((err as ThroughlineError).details?.['remoteCode'], 'ERR_BAD_REQUEST', `policy ${JSON.stringify(policy)} refused`)
  }
  await verifierRequest(A, route, { op: 'setPolicy', policy: { id: 'strict', minSvn: 3, trustSim: true } })
  t.match((await verifierRequest(A, route, { op: 'getPolicy' }))['policy'], { id: 'strict', minSvn: 3, trustSim: true })
  const O = await w.mk('Oa')
  const oCh = new SecureChannels(O, { identity: SoftwareIdentity.generate() })
  const { route: r2 } = await resolveRoute('/memory/Va/secure/secure/service/verifier', oCh)
  await t.rejects(verifierRequest(O, r2, { op: 'removeReferenceValues', name: 'fw-b' }), { code: 'ERR_VERIFIER_DENIED' })
  t.equal(verifier.referenceValues.size, 1)
})
