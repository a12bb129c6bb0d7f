// Attestation building blocks without hardware: the handle rule, TPM-shaped quotes, the sim suite
// (every fault knob and the reason the verifier gives for it), appraisal policy and reference
// values, delta event logs with cursors, clock checks, result tokens and evidence limits.
// The sim suite proves protocol and verifier behaviour only: there is no silicon behind it.
import t from 'tap'
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto'
import { pack } from 'msgpackr'
import { isThroughlineError } from '../src/errors.ts'
import { TPM_ALG } from '../src/vault/tpm/constants.ts'
import { parseAttest } from '../src/vault/tpm/attest.ts'
import { parseSignature } from '../src/vault/tpm/marshal.ts'
import {
  APPRAISAL_REASONS,
  DEFAULT_PCR_SELECTION,
  FORMAT,
  HANDLE_ALG,
  MAX_EVIDENCE_BYTES,
  MAX_TOKEN_BYTES,
  ReferenceValues,
  SimAttester,
  SimPlatform,
  SimRoot,
  Verifier,
  VerifierKey,
  assertMinted,
  buildQuoteAttest,
  checkQuotePcrs,
  decodeDeviceCert,
  decodeEvidence,
  decodeQuoteBody,
  deriveHandle,
  encodeEvidence,
  encodeQuoteBody,
  mintContext,
  newLogCursor,
  quotePcrDigest,
  resultAttributes,
  roundHashPoint,
  signQuoteAttest,
  signResult,
  simAkName,
  spkiOf,
  verifyDeviceCert,
  verifyQuoteSignature,
  verifyResultToken,
  worstTier,
  type AppraisalPolicy,
  type AttestationContext,
  type AttestationResult,
  type EventLogEntry,
  type Evidence,
  type LogCursor,
  type SimFaults,
} from '../src/attest/index.ts'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const seq = (from: number, n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => from + i)
const rand = (n = 32): Uint8Array => new Uint8Array(randomBytes(n))
const sha = (b: Uint8Array | string): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest())

const root = SimRoot.generate('test-root', { seed: 'throughline test root' })
const TEST_POLICY: AppraisalPolicy = { id: 'test-trust-sim', trustSim: true, minSvn: 1 }

interface Fixture {
  att: SimAttester
  verifier: Verifier
  staticPub: Uint8Array
}

function fixture(options: { policy?: AppraisalPolicy; faults?: Partial<SimFaults>; firmware?: string; clock?: () => number } = {}): Fixture {
  const platformOptions: ConstructorParameters<typeof SimPlatform>[0] = { root }
  if (options.firmware !== undefined) platformOptions.firmware = options.firmware
  if (options.clock !== undefined) platformOptions.clock = options.clock
  const att = new SimAttester(new SimPlatform(platformOptions), options.faults === undefined ? {} : { faults: options.faults })
  const verifier = new Verifier({
    id: 'verifier-1',
    trustAnchors: { simRoots: [root.publicKeySpki] },
    referenceValues: new ReferenceValues([att.platform.referenceSet('golden')]),
    policy: options.policy ?? TEST_POLICY,
  })
  return { att, verifier, staticPub: rand() }
}

/** One attestation round as the channel runs it: mint a context, attest, (wire), appraise. */
async function round(f: Fixture, cursor?: LogCursor, logFrom = cursor?.count ?? 0): Promise<{ result: AttestationResult; evidence: Evidence; ctx: AttestationContext }> {
  const ctx = mintContext('R', 'sim', rand(), f.staticPub, logFrom)
  const evidence = decodeEvidence(encodeEvidence(await f.att.attest(ctx)))
  const req: Parameters<Verifier['appraise']>[0] = { evidence, expectedHandle: ctx.handle, attesterStaticPub: f.staticPub, identifier: 'I_test', expectedSuites: ['sim'] }
  if (cursor !== undefined) req.log = cursor
  return { result: await f.verifier.appraise(req), evidence, ctx }
}

// ---------------------------------------------------------------------------------------------

t.test('handle rule: fixed vectors and LV unambiguity', async (t) => {
  const hPoint = seq(0, 32)
  const pub = seq(32, 32)
  // Computed independently (Python hashlib) from the rule in handle.ts.
  t.equal(hex(deriveHandle('R', 'sim', hPoint, pub)), 'b7dd8f6cd30f58a574153715e341907dc51f72b82233fe2e67f2c30b70ffff8b')
  t.equal(hex(deriveHandle('I', 'tpm2', hPoint, pub, new Uint8Array(16).fill(0xaa))), 'afb79fa830bfeb9354af226183f360f4ae294255defdb8b8682a365e962f03d3')
  t.equal(hex(roundHashPoint(new Uint8Array(32).fill(7), new Uint8Array(16).fill(9), 'I', 5)), '6f21197cc9351f193411a73d66e87c1e5ee88a1893d3b8b4541f73d8eba20aa4')
  // The same concatenated bytes split differently give different handles.
  t.not(hex(deriveHandle('R', 'sim', Uint8Array.of(1, 2), Uint8Array.of(3))), hex(deriveHandle('R', 'sim', Uint8Array.of(1), Uint8Array.of(2, 3))))
  t.not(hex(deriveHandle('R', 'si', Uint8Array.of(0x6d, 1), pub)), hex(deriveHandle('R', 'sim', Uint8Array.of(1), pub)))
  t.not(hex(deriveHandle('R', 'sim', hPoint, pub)), hex(deriveHandle('R', 'sim', hPoint, pub, new Uint8Array(1))), 'empty vs zero vnonce')
  t.not(hex(deriveHandle('R', 'sim', hPoint, pub)), hex(deriveHandle('I', 'sim', hPoint, pub)), 'role is bound')
})

t.test('quote: build → parseAttest → sign → verify', async (t) => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const akPub = spkiOf(privateKey)
  const pcrs: [number, Uint8Array][] = [
    [0, sha('a')],
    [7, sha('b')],
    [10, sha('c')],
  ]
  const handle = rand()
  const attest = buildQuoteAttest({
    qualifiedSigner: simAkName(akPub),
    extraData: handle,
    clock: 123_456_789n,
    resetCount: 3,
    restartCount: 2,
    safe: true,
    firmwareVersion: 0x0102030405060708n,
    pcrs: [10, 0, 7],
    pcrDigest: quotePcrDigest(pcrs),
  })
  t.equal(hex(attest.subarray(0, 6)), 'ff5443478018', 'magic and quote type')
  const a = parseAttest(attest)
  t.same([hex(a.extraData), a.clockInfo.clock, a.clockInfo.resetCount, a.clockInfo.restartCount, a.clockInfo.safe, a.firmwareVersion], [hex(handle), 123_456_789n, 3, 2, true, 0x0102030405060708n])
  t.same(a.quote?.pcrSelect, [{ hashAlg: TPM_ALG.SHA256, pcrs: [0, 7, 10] }])
  t.equal(hex(a.qualifiedSigner.subarray(0, 2)), '000b')
  t.equal(hex(a.qualifiedSigner.subarray(2)), hex(sha(akPub)), 'sim AK name = 000b ‖ SHA-256(SPKI)')
  t.equal(checkQuotePcrs(a, pcrs), undefined)
  t.equal(checkQuotePcrs(a, [pcrs[0]!, pcrs[1]!, [10, sha('x')]])?.reason, 'pcr_digest_mismatch')
  t.equal(checkQuotePcrs(a, [pcrs[0]!, pcrs[1]!])?.reason, 'pcr_digest_mismatch', 'a different selection')

  const sig = signQuoteAttest(attest, privateKey)
  const parsed = parseSignature(sig)
  t.same([parsed.sigAlg, parsed.hashAlg, parsed.r?.length, parsed.s?.length], [TPM_ALG.ECDSA, TPM_ALG.SHA256, 32, 32])
  t.ok(verifyQuoteSignature(attest, sig, akPub))
  const other = attest.slice()
  other[other.length - 1]! ^= 1
  t.notOk(verifyQuoteSignature(other, sig, akPub), 'altered TPMS_ATTEST')
  t.notOk(verifyQuoteSignature(attest, sig, spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)), 'another key')
  t.throws(() => verifyQuoteSignature(attest, sig.subarray(0, 10), akPub), { code: 'ERR_TPM_MALFORMED' })
  t.throws(() => verifyQuoteSignature(attest, sig, spkiOf(generateKeyPairSync('ed25519').privateKey)), { code: 'ERR_ATTEST_EVIDENCE' })
})

t.test('sim happy path: affirming with trustSim and matching reference values', async (t) => {
  const f = fixture()
  const { result, evidence, ctx } = await round(f)
  t.equal(result.status, 'affirming', String(result.detail))
  t.equal(result.reason, undefined)
  t.same(result.trustVector, { instanceIdentity: 2, configuration: 2, executables: 2, fileSystem: 0, hardware: 2, runtimeOpaque: 0, storageOpaque: 0, sourcedData: 0 })
  t.equal(hex(result.nonce), hex(ctx.handle))
  t.equal(hex(result.keyAttestation.pub), hex(f.staticPub))
  t.equal(result.keyAttestation.identifier, 'I_test')
  t.equal(result.exp - result.iat, 5 * 60_000)
  t.equal(result.suite, 'sim')
  t.equal(result.policyId, 'test-trust-sim')
  t.match(result.claims, { debug: false, svn: 1, firmware: 'sim-fw-1.0', referenceSet: 'golden', logEntries: 6, subject: f.att.platform.subject })
  t.equal(evidence.fmt, FORMAT.SIM_TPM2)
  t.equal(evidence.handleAlg, HANDLE_ALG)
  t.same(decodeQuoteBody(evidence.body).pcrs.map(([i]) => i), [...DEFAULT_PCR_SELECTION])
  t.same(evidence.log?.entries.map((e) => `${e.pcr}:${e.type}`), ['0:firmware', '1:config', '4:bootloader', '7:secure-boot', '7:kernel', '10:app'])
  t.equal(Buffer.from(evidence.log!.entries[1]!.data!).toString(), '{"debug":false,"svn":1,"firmware":"sim-fw-1.0"}')
  t.match(resultAttributes(result), { 'attest.status': 'affirming', 'attest.suite': 'sim', 'attest.exp': result.exp, 'attest.verifier': 'verifier-1', 'attest.trustVector': result.trustVector })
})

t.test('the default policy never affirms sim', async (t) => {
  const f = fixture({ policy: { id: 'default' } })
  const { result } = await round(f)
  t.equal(result.status, 'warning')
  t.equal(result.reason, 'sim_untrusted')
  t.equal(result.trustVector.hardware, 32)
  const v = new Verifier({ id: 'v', trustAnchors: { simRoots: [root.publicKeySpki] } })
  const ctx = mintContext('R', 'sim', rand(), f.staticPub)
  const r2 = await v.appraise({ evidence: await f.att.attest(ctx), expectedHandle: ctx.handle, attesterStaticPub: f.staticPub })
  t.equal(r2.status, 'warning')
  t.equal(r2.reason, 'reference_mismatch', 'no reference values configured')
  t.equal(r2.detail, 'no reference values are configured; sim evidence (the policy does not trust sim)')
})

t.test('every fault knob gives its exact reason', async (t) => {
  const cases: [keyof SimFaults, string, AttestationResult['status']][] = [
    ['corruptSignature', 'bad_signature', 'contraindicated'],
    ['wrongHandle', 'handle_mismatch', 'contraindicated'],
    ['foreignChannelEvidence', 'handle_mismatch', 'contraindicated'],
    ['untrustedRoot', 'untrusted_root', 'contraindicated'],
    ['expiredDeviceCert', 'endorsement_expired', 'contraindicated'],
    ['pcrTamper', 'pcr_digest_mismatch', 'contraindicated'],
    ['logTamper', 'log_replay_mismatch', 'contraindicated'],
    ['logGap', 'log_cursor_gap', 'contraindicated'],
    ['clockUnsafe', 'clock_unsafe', 'contraindicated'],
    ['debug', 'debug_enabled', 'warning'],
    ['svnBelowMin', 'svn_below_min', 'warning'],
    ['unknownFormat', 'unknown_format', 'none'],
  ]
  for (const [knob, reason, status] of cases) {
    const f = fixture()
    ;(f.att.faults[knob] as boolean) = true
    const { result } = await round(f, newLogCursor())
    t.equal(result.reason, reason, `${knob} → ${reason} (${String(result.detail)})`)
    t.equal(result.status, status, `${knob} → ${status}`)
    t.ok(reason in APPRAISAL_REASONS)
    if (knob === 'unknownFormat') t.same(Object.values(result.trustVector), [1, 1, 1, 1, 1, 1, 1, 1], 'unexpected evidence: claims 1')
    if (knob === 'untrustedRoot') t.same([result.trustVector.hardware, result.trustVector.instanceIdentity], [97, 97])
  }

  t.test('reuseLastEvidence (replay) and clockRollback take two rounds', async (t) => {
    const f = fixture()
    const cursor = newLogCursor()
    t.equal((await round(f, cursor)).result.status, 'affirming')
    f.att.faults.reuseLastEvidence = true
    t.equal((await round(f, cursor)).result.reason, 'handle_mismatch')
    f.att.faults.reuseLastEvidence = false
    t.equal((await round(f, cursor)).result.status, 'affirming')
    f.att.faults.clockRollback = true
    const r = (await round(f, cursor)).result
    t.equal(r.reason, 'clock_check_failed')
    t.match(r.detail, /TPM clock went back/)
    t.equal(r.trustVector.hardware, 96)
  })

  t.test('debug is contraindicated by policy', async (t) => {
    const f = fixture({ policy: { ...TEST_POLICY, debug: 'contraindicated' }, faults: { debug: true } })
    const { result } = await round(f)
    t.same([result.status, result.reason, result.trustVector.configuration, result.claims?.['debug']], ['contraindicated', 'debug_enabled', 96, true])
  })

  t.test('knobs off again: the config is re-measured back', async (t) => {
    const f = fixture({ faults: { svnBelowMin: true } })
    t.equal((await round(f)).result.reason, 'svn_below_min')
    t.equal(f.att.platform.svn, 0)
    f.att.faults.svnBelowMin = false
    const { result } = await round(f)
    t.equal(f.att.platform.svn, 1)
    t.equal(result.claims?.['svn'], 1)
    t.equal(result.reason, 'reference_mismatch', 'PCR 1 moved on: the golden set no longer matches')
  })

  t.test('throw: the attester fails', async (t) => {
    const f = fixture({ faults: { throw: true } })
    await t.rejects(f.att.attest(mintContext('R', 'sim', rand(), f.staticPub)), { code: 'ERR_ATTEST_PROVER_FAILED' })
  })

  t.test('delayMs sleeps and honours the AbortSignal', async (t) => {
    const f = fixture({ faults: { delayMs: 150 } })
    const t0 = Date.now()
    await f.att.attest(mintContext('R', 'sim', rand(), f.staticPub))
    t.ok(Date.now() - t0 >= 140, 'slept')
    f.att.faults.delayMs = 10_000
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 20)
    const t1 = Date.now()
    await t.rejects(f.att.attest(mintContext('R', 'sim', rand(), f.staticPub), ac.signal), { code: 'ERR_ABORTED' })
    t.ok(Date.now() - t1 < 2000, 'aborted early')
  })
})

t.test('a PCR extended without a log entry before the quote fails the replay', async (t) => {
  const f = fixture()
  f.att.platform.extend(10, rand())
  const { result } = await round(f)
  t.equal(result.reason, 'log_replay_mismatch')
  t.match(result.detail, /PCR 10/)
})

t.test('verifier malfunction: status none, claims -1', async (t) => {
  class Broken extends ReferenceValues {
    override match(): string | undefined {
      throw new Error('reference store offline')
    }
  }
  const f = fixture()
  const v = new Verifier({ id: 'broken', trustAnchors: { simRoots: [root.publicKeySpki] }, referenceValues: new Broken(), policy: TEST_POLICY })
  const ctx = mintContext('R', 'sim', rand(), f.staticPub)
  const r = await v.appraise({ evidence: await f.att.attest(ctx), expectedHandle: ctx.handle, attesterStaticPub: f.staticPub })
  t.same([r.status, r.reason], ['none', 'verifier_malfunction'])
  t.same(Object.values(r.trustVector), [-1, -1, -1, -1, -1, -1, -1, -1])
  t.match(r.detail, /reference store offline/)
})

t.test('unexpected suite, malformed evidence and endorsement failures', async (t) => {
  const f = fixture()
  const ctx = mintContext('R', 'sim', rand(), f.staticPub)
  const ev = await f.att.attest(ctx)
  const base = { expectedHandle: ctx.handle, attesterStaticPub: f.staticPub }
  let r = await f.verifier.appraise({ ...base, evidence: ev, expectedSuites: ['tpm2'] })
  t.same([r.status, r.reason], ['none', 'unexpected_suite'])
  r = await f.verifier.appraise({ ...base, evidence: { ...ev, handleAlg: 'sha1/v0' } })
  t.same([r.status, r.reason], ['none', 'unknown_format'])
  r = await f.verifier.appraise({ ...base, evidence: { ...ev, body: Uint8Array.of(1, 2, 3) } })
  t.same([r.status, r.reason], ['none', 'malformed'])
  r = await f.verifier.appraise({ ...base, evidence: { ...ev, endorsements: [] } })
  t.same([r.status, r.reason], ['contraindicated', 'endorsement_invalid'])
  // a certificate from the trusted root, but for another AK
  const otherAk = spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)
  const foreignCert = root.issueDeviceCert({ akPub: otherAk, subject: 'x', notBefore: Date.now() - 1000, notAfter: Date.now() + 60_000 })
  r = await f.verifier.appraise({ ...base, evidence: { ...ev, endorsements: [foreignCert] } })
  t.same([r.reason, r.detail], ['endorsement_invalid', 'the device certificate of "x" certifies another attestation key'])
  const noRoots = new Verifier({ id: 'v', trustAnchors: {} })
  t.equal((await noRoots.appraise({ ...base, evidence: ev })).reason, 'untrusted_root')
})

t.test('tpm2-format evidence: pinned AKs, magic/type checks', async (t) => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const akPub = spkiOf(privateKey)
  const configData = new Uint8Array(Buffer.from('{"debug":false,"svn":3,"firmware":"tpm-fw"}'))
  const log: EventLogEntry[] = [
    { pcr: 0, digest: sha('fw'), type: 'firmware' },
    { pcr: 1, digest: sha(configData), type: 'config', data: configData },
  ]
  const pcr = (i: number): Uint8Array => {
    let v: Uint8Array = new Uint8Array(32)
    for (const e of log) if (e.pcr === i) v = sha(Buffer.concat([v, e.digest]))
    return v
  }
  const pcrs: [number, Uint8Array][] = [
    [0, pcr(0)],
    [1, pcr(1)],
  ]
  const handle = rand()
  const staticPub = rand()
  const make = (patch: (a: Uint8Array) => void = () => {}): Evidence => {
    const attest = buildQuoteAttest({ qualifiedSigner: rand(34), extraData: handle, clock: BigInt(Date.now()), resetCount: 0, restartCount: 0, safe: true, firmwareVersion: 1n, pcrs: [0, 1], pcrDigest: quotePcrDigest(pcrs) })
    patch(attest)
    const body = encodeQuoteBody({ v: 1, attest, sig: signQuoteAttest(attest, privateKey), pcrs, akPub })
    return { suite: 'tpm2', fmt: FORMAT.TPM2_QUOTE, handleAlg: HANDLE_ALG, body, log: { from: 0, entries: log } }
  }
  const refs = new ReferenceValues([{ name: 'tpm-golden', pcrs: { 0: hex(pcr(0)), 1: hex(pcr(1)) } }])
  const pinned = new Verifier({ id: 'v', trustAnchors: { tpmAks: [akPub] }, referenceValues: refs, policy: { id: 'p', minSvn: 2 } })
  const req = { expectedHandle: handle, attesterStaticPub: staticPub }
  let r = await pinned.appraise({ ...req, evidence: make() })
  t.same([r.status, r.suite, r.trustVector.hardware, r.claims?.['svn']], ['affirming', 'tpm2', 2, 3], String(r.detail))
  r = await new Verifier({ id: 'v', trustAnchors: {} }).appraise({ ...req, evidence: make() })
  t.same([r.status, r.reason, r.trustVector.instanceIdentity], ['contraindicated', 'unknown_ak', 97])
  r = await pinned.appraise({ ...req, evidence: make((a) => (a[0] = 0xfe)) })
  t.same([r.status, r.reason], ['none', 'malformed'], 'wrong magic, correctly signed')
  t.match(r.detail, /magic/)
  r = await pinned.appraise({ ...req, evidence: make((a) => (a[5] = 0x17)) })
  t.same([r.reason], ['malformed'], 'certify type: no quote info')
})

t.test('reference values: several sets, removal, expiry', async (t) => {
  const a = fixture({ firmware: 'fw-A' })
  const b = fixture({ firmware: 'fw-B' })
  const refs = new ReferenceValues()
  refs.add(a.att.platform.referenceSet('firmware-A'))
  refs.add(b.att.platform.referenceSet('firmware-B'))
  t.same(refs.list().map((s) => s.name), ['firmware-A', 'firmware-B'])
  const v = new Verifier({ id: 'v', trustAnchors: { simRoots: [root.publicKeySpki] }, referenceValues: refs, policy: TEST_POLICY })
  a.verifier = v
  b.verifier = v
  t.same([(await round(a)).result.status, (await round(a)).result.claims?.['referenceSet']], ['affirming', 'firmware-A'])
  t.same([(await round(b)).result.status, (await round(b)).result.claims?.['referenceSet']], ['affirming', 'firmware-B'])
  t.ok(refs.remove('firmware-B'))
  t.notOk(refs.remove('firmware-B'))
  const rb = (await round(b)).result
  t.same([rb.status, rb.reason, rb.trustVector.executables], ['warning', 'reference_mismatch', 33])
  t.equal((await round(a)).result.status, 'affirming')
  refs.add({ ...a.att.platform.referenceSet('firmware-A'), expires: Date.now() - 1 })
  t.equal((await round(a)).result.reason, 'reference_mismatch', 'an expired set does not match')
  t.throws(() => refs.add({ name: 'empty', pcrs: {} }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => refs.add({ name: 'bad', pcrs: { 0: 'abcd' } }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => refs.add({ name: 'bad', pcrs: { 24: hex(rand()) } }), { code: 'ERR_INVALID_ARGUMENT' })
  const lax = new Verifier({ id: 'v', trustAnchors: { simRoots: [root.publicKeySpki] }, policy: { ...TEST_POLICY, requireReferenceValues: false } })
  b.verifier = lax
  const rl = (await round(b)).result
  t.same([rl.status, rl.trustVector.executables], ['affirming', 0], 'reference values not required')
})

t.test('delta event log with a cursor', async (t) => {
  const f = fixture()
  f.verifier.referenceValues.remove('golden')
  f.verifier.setPolicy({ ...TEST_POLICY, requireReferenceValues: false })
  const cursor = newLogCursor()
  const r1 = await round(f, cursor)
  t.equal(r1.result.status, 'affirming', String(r1.result.detail))
  t.equal(cursor.count, 6)
  t.equal(r1.evidence.log?.from, 0)

  for (const app of ['plugin-a', 'plugin-b', 'plugin-c']) f.att.platform.measure(10, 'app', app)
  const r2 = await round(f, cursor)
  t.same([r2.evidence.log?.from, r2.evidence.log?.entries.length], [6, 3], 'only the delta is sent')
  t.equal(r2.result.status, 'affirming', String(r2.result.detail))
  t.equal(cursor.count, 9)

  const r3 = await round(f, cursor, 0)
  t.same([r3.evidence.log?.from, r3.evidence.log?.entries.length], [0, 9], 'the full log again')
  t.equal(r3.result.status, 'affirming', String(r3.result.detail))
  t.equal(cursor.count, 9)

  f.att.platform.measure(10, 'app', 'plugin-d')
  const before = cursor.count
  f.att.faults.logGap = true
  const r4 = await round(f, cursor)
  t.equal(r4.evidence.log?.from, 10)
  t.same([r4.result.reason, r4.result.status], ['log_cursor_gap', 'contraindicated'])
  t.equal(cursor.count, before, 'a failed replay does not move the cursor')
  f.att.faults.logGap = false
  t.equal((await round(f, cursor)).result.status, 'affirming')
  t.equal(cursor.count, 10)

  t.test('without a cursor a delta is a gap', async (t) => {
    const ctx = mintContext('R', 'sim', rand(), f.staticPub, 6)
    const r = await f.verifier.appraise({ evidence: await f.att.attest(ctx), expectedHandle: ctx.handle, attesterStaticPub: f.staticPub })
    t.equal(r.reason, 'log_cursor_gap')
  })

  t.test('a reboot restarts the log and the counters', async (t) => {
    f.att.platform.reboot()
    const r = await round(f, cursor)
    t.equal(r.evidence.log?.from, 0, 'the attester sends the new log from 0')
    t.equal(r.result.status, 'affirming', String(r.result.detail))
    t.same([r.result.claims?.['resetCount'], cursor.count], [1, 6])
  })
})

t.test('clock checks across rounds', async (t) => {
  t.test('rollback without a cursor (state per AK)', async (t) => {
    const f = fixture()
    t.equal((await round(f)).result.status, 'affirming')
    await new Promise((resolve) => setTimeout(resolve, 1100)) // more than the 1 s the knob goes back
    f.att.faults.clockRollback = true
    t.equal((await round(f)).result.reason, 'clock_check_failed')
    f.att.faults.clockRollback = false
    t.equal((await round(f)).result.status, 'affirming')
  })
  t.test('a restart may lower nothing; reset and restart counters only move forward', async (t) => {
    const f = fixture()
    const cursor = newLogCursor()
    t.equal((await round(f, cursor)).result.status, 'affirming')
    f.att.platform.restart()
    const r = await round(f, cursor)
    t.same([r.result.status, r.result.claims?.['restartCount']], ['affirming', 1])
    cursor.clock!.restartCount = 5 // as if a later restart had been seen
    t.match((await round(f, cursor)).result.detail, /restartCount went back from 5 to 1/)
  })
  t.test('a clock running ahead of the verifier', async (t) => {
    let clock = 1000
    const f = fixture({ clock: () => clock })
    const cursor = newLogCursor()
    t.equal((await round(f, cursor)).result.status, 'affirming')
    clock += 10 * 60_000
    const r = await round(f, cursor)
    t.equal(r.result.reason, 'clock_check_failed')
    t.match(r.result.detail, /ahead/)
  })
})

t.test('result tokens', async (t) => {
  const f = fixture()
  const { result } = await round(f)
  const key = VerifierKey.generate(new Uint8Array(32).fill(3))
  t.equal(key.kid, VerifierKey.generate(new Uint8Array(32).fill(3)).kid, 'deterministic from a seed')
  t.match(key.kid, /^[0-9a-f]{32}$/)
  const token = key.sign(result)
  t.equal(token.split('.').length, 3)
  t.same(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()), { alg: 'EdDSA', typ: 'JWT', kid: key.kid })
  const back = verifyResultToken(token, key.trusted(), result.iat, 30_000)
  t.same(back, result, 'round trip (bytes as base64url)')
  t.equal(signResult(result, key), token, 'Ed25519 is deterministic')

  const [h, p, s] = token.split('.') as [string, string, string]
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString())
  payload.status = 'affirming'
  payload.exp += 3_600_000
  const tampered = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`
  t.throws(() => verifyResultToken(tampered, key.trusted(), result.iat, 30_000), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { reason: 'bad_token_signature' } })
  t.throws(() => verifyResultToken(token, VerifierKey.generate().trusted(), result.iat, 30_000), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { reason: 'unknown_issuer' } })

  t.ok(verifyResultToken(token, key.trusted(), result.exp + 29_000, 30_000), 'expired within the skew')
  t.throws(() => verifyResultToken(token, key.trusted(), result.exp + 31_000, 30_000), { code: 'ERR_ATTEST_NO_VALID_RESULT' })
  const err = (() => {
    try {
      verifyResultToken(token, key.trusted(), result.iat - 60_000, 30_000)
    } catch (e) {
      return e
    }
    return undefined
  })()
  t.ok(isThroughlineError(err, 'ERR_ATTEST_VERIFIER_FAILED'))
  t.match((err as Error).message, /clock skew 60 s > 30 s/)

  t.throws(() => verifyResultToken('a'.repeat(MAX_TOKEN_BYTES + 1), key.trusted(), 0, 0), { code: 'ERR_ATTEST_EVIDENCE' })
  t.throws(() => verifyResultToken('not a token', key.trusted(), 0, 0), { code: 'ERR_ATTEST_EVIDENCE' })
  t.throws(() => verifyResultToken(`${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.${s}`, key.trusted(), 0, 0), { code: 'ERR_ATTEST_EVIDENCE' })
  const resigned = `${h}.${Buffer.from('{"profile":"x"}').toString('base64url')}`
  const { sign } = await import('node:crypto')
  const badPayload = `${resigned}.${sign(null, Buffer.from(resigned), key.privateKey).toString('base64url')}`
  t.throws(() => verifyResultToken(badPayload, key.trusted(), 0, 0), { code: 'ERR_ATTEST_EVIDENCE' }, 'signed but malformed payload')
})

t.test('evidence decode limits', async (t) => {
  t.throws(() => decodeEvidence(new Uint8Array(MAX_EVIDENCE_BYTES + 16 * 1024 + 1)), { code: 'ERR_ATTEST_EVIDENCE' }, 'oversize')
  t.throws(() => decodeEvidence(Uint8Array.of(0xc1)), { code: 'ERR_ATTEST_EVIDENCE' }, 'not msgpack')
  const good = { suite: 'sim', fmt: FORMAT.SIM_TPM2, handleAlg: HANDLE_ALG, body: Uint8Array.of(1) }
  t.ok(decodeEvidence(pack(good)))
  const bads: Record<string, unknown>[] = [
    { ...good, suite: 7 },
    { ...good, body: 'text' },
    { ...good, fmt: undefined },
    { ...good, endorsements: [Uint8Array.of(1), Uint8Array.of(1), Uint8Array.of(1), Uint8Array.of(1), Uint8Array.of(1)] },
    { ...good, log: { from: -1, entries: [] } },
    { ...good, log: { from: 0, entries: [{ pcr: 1, digest: new Uint8Array(31), type: 'x' }] } },
    { ...good, log: { from: 0, entries: [{ pcr: 24, digest: new Uint8Array(32), type: 'x' }] } },
    { ...good, log: { from: 0, entries: Array.from({ length: 1025 }, () => ({ pcr: 1, digest: new Uint8Array(32), type: 'x' })) } },
  ]
  for (const b of bads) t.throws(() => decodeEvidence(pack(b)), { code: 'ERR_ATTEST_EVIDENCE' }, JSON.stringify(Object.keys(b)))
  t.throws(() => decodeQuoteBody(pack({ v: 1, attest: Uint8Array.of(1), sig: Uint8Array.of(1), akPub: Uint8Array.of(1), pcrs: [[0, new Uint8Array(31)]] })), { code: 'ERR_ATTEST_EVIDENCE' })
  t.throws(() => decodeQuoteBody(new Uint8Array(MAX_EVIDENCE_BYTES + 1)), { code: 'ERR_ATTEST_EVIDENCE' })
})

t.test('sim device certificates', async (t) => {
  const p256Root = SimRoot.generate('p256-root', { alg: 'p256' })
  const ak = spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)
  const now = Date.now()
  for (const r of [root, p256Root]) {
    const cert = r.issueDeviceCert({ akPub: ak, subject: 'dev-1', notBefore: now - 1000, notAfter: now + 1000 })
    t.equal(decodeDeviceCert(cert).cert.issuer, r.keyId)
    t.same(verifyDeviceCert(cert, [r.publicKeySpki], now).akPub, ak, `${r.alg} root`)
    t.throws(() => verifyDeviceCert(cert, [SimRoot.generate().publicKeySpki], now), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { reason: 'untrusted_root' } })
    t.throws(() => verifyDeviceCert(cert, [r.publicKeySpki], now + 5000), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { reason: 'endorsement_expired' } })
    t.ok(verifyDeviceCert(cert, [r.publicKeySpki], now + 5000, 10_000), 'within the skew')
  }
  // the tbs of a certificate from the trusted root, with a signature by another key
  const rogue = SimRoot.generate('rogue')
  const { tbs } = decodeDeviceCert(root.issueDeviceCert({ akPub: ak, subject: 'dev-1', notBefore: now - 1000, notAfter: now + 1000 }))
  const { sig } = decodeDeviceCert(rogue.issueDeviceCert({ akPub: ak, subject: 'dev-1', notBefore: now - 1000, notAfter: now + 1000 }))
  t.throws(() => verifyDeviceCert(pack({ tbs, sig }), [root.publicKeySpki], now), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { reason: 'endorsement_invalid' } })
  t.throws(() => decodeDeviceCert(pack({ tbs: pack({ v: 2 }), sig: Uint8Array.of(1) })), { code: 'ERR_ATTEST_EVIDENCE' })
  t.throws(() => root.issueDeviceCert({ akPub: spkiOf(generateKeyPairSync('ed25519').privateKey), subject: 'x', notBefore: 0, notAfter: 1 }), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('seeded platforms are reproducible', async (t) => {
  const a = new SimPlatform({ root, seed: 'vector-seed', clock: () => 5000 })
  const b = new SimPlatform({ root, seed: 'vector-seed', clock: () => 5000 })
  t.equal(hex(a.akPub), hex(b.akPub))
  t.same(a.pcrValues().map(([i, v]) => [i, hex(v)]), b.pcrValues().map(([i, v]) => [i, hex(v)]))
  t.equal(hex(a.pcr(0)), hex(sha(Buffer.concat([new Uint8Array(32), sha('sim-firmware sim-fw-1.0')]))), 'PCR 0 = H(0 ‖ H(firmware))')
  t.equal(hex(a.random(16)), hex(b.random(16)))
  t.not(hex(new SimPlatform({ root, seed: 'other' }).akPub), hex(a.akPub))
})

t.test('attesters sign only minted contexts', async (t) => {
  const f = fixture()
  const minted = mintContext('R', 'sim', rand(), f.staticPub)
  const forged: AttestationContext = { role: 'R', suite: 'sim', handle: rand(), logFrom: 0 }
  t.throws(() => assertMinted(forged), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => assertMinted({ ...minted }), { code: 'ERR_INVALID_ARGUMENT' }, 'a copy of a minted context')
  t.doesNotThrow(() => assertMinted(minted))
  await t.rejects(f.att.attest(forged), { code: 'ERR_INVALID_ARGUMENT' })
  await t.rejects(f.att.attest({ ...minted, handle: rand() }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.rejects(f.att.attest(mintContext('R', 'tpm2', rand(), f.staticPub)), { code: 'ERR_ATTEST_PROVER_FAILED' })
  t.equal(worstTier({ instanceIdentity: 0, configuration: 0, executables: 0, fileSystem: 0, hardware: 0, runtimeOpaque: 0, storageOpaque: 0, sourcedData: 0 }), 'none')
})
