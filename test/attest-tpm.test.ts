// The tpm2 suite attester (src/attest/tpm2.ts) against a private swtpm: evidence over a
// channel-minted handle, checked here with node:crypto alone (signature over SHA-256(TPMS_ATTEST),
// extraData = the handle, pcrDigest = SHA-256 of the reported PCR values, the event log replayed
// from reset PCRs reproduces them); failures for a wrong handle, an extend outside the log, forged
// contexts, aborts and vault errors; the measurement log across save/load and a TPM restart; and
// appraisal by the Verifier (src/attest/verifier.ts) with the AK pinned, including one
// reference-value set that appraises both the sim platform and the TPM measured the same way.
// swtpm proves protocol correctness, not silicon binding: it has no manufacturer EK.
import t, { type Test } from 'tap'
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isThroughlineError } from '../src/errors.ts'
import { TpmVault } from '../src/vault/index.ts'
import { parseAttest } from '../src/vault/tpm/attest.ts'
import { decodeQuoteBody } from '../src/attest/evidence.ts'
import { deriveHandle, mintContext } from '../src/attest/handle.ts'
import { FORMAT, HANDLE_ALG, type AttestationContext, type EventLogEntry, type Evidence } from '../src/attest/types.ts'
import { MeasurementLog, Tpm2Attester, bootRecipeEvents, pcrResetValue, replayLog, type BootRecipe, type PcrBank } from '../src/attest/tpm2.ts'
import { ReferenceValues, Verifier, newLogCursor, type LogCursor } from '../src/attest/verifier.ts'
import { SimAttester, SimPlatform, SimRoot } from '../src/attest/sim.ts'
import { startSwtpm, swtpmAvailable, type Swtpm } from './helpers/swtpm.ts'

const noSwtpm = swtpmAvailable() ? false : 'swtpm is not installed (scripts install swtpm swtpm-tools tpm2-tools in CI)'

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest()
}
const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? new Uint8Array(0)).toString('hex')

const RECIPE: BootRecipe = { firmware: 'fw-1.4.2', svn: 3, debug: false, bootloader: 'shim-15.8/grub-2.12', secureBoot: 'sb-db-2026-01', app: 'throughline-device-0.1.0' }
const QUOTED = [0, 1, 4, 7, 10]

/** A private swtpm and a vault on it; both closed (vault first, then swtpm by its PID) at the end of `t`. */
async function tpm(t: Test): Promise<{ swtpm: Swtpm; vault: TpmVault }> {
  const swtpm = await startSwtpm()
  let vault: TpmVault | undefined
  t.teardown(async () => {
    await vault?.close().catch(() => {})
    await swtpm.stop()
  })
  vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: t.testdir() })
  return { swtpm, vault }
}

/** A context as the secure channel mints it: random handshake hash point and static key. */
function channelContext(logFrom = 0): { ctx: AttestationContext; hPoint: Uint8Array; staticPub: Uint8Array } {
  const hPoint = randomBytes(32)
  const staticPub = randomBytes(32)
  return { ctx: mintContext('R', 'tpm2', hPoint, staticPub, logFrom), hPoint, staticPub }
}

/** TPMT_SIGNATURE (ECDSA) → IEEE P1363 r ‖ s, parsed by hand. */
function p1363(sig: Uint8Array): { sigAlg: number; hashAlg: number; rs: Buffer } {
  const b = Buffer.from(sig)
  const sigAlg = b.readUInt16BE(0)
  const hashAlg = b.readUInt16BE(2)
  const rLen = b.readUInt16BE(4)
  const r = b.subarray(6, 6 + rLen)
  const sLen = b.readUInt16BE(6 + rLen)
  const s = b.subarray(8 + rLen, 8 + rLen + sLen)
  if (8 + rLen + sLen !== b.length) throw new Error('trailing bytes after TPMT_SIGNATURE')
  const pad = (v: Buffer): Buffer => Buffer.concat([Buffer.alloc(Math.max(0, 32 - v.length)), v]).subarray(-32)
  return { sigAlg, hashAlg, rs: Buffer.concat([pad(r), pad(s)]) }
}

/** Replays entries from reset PCRs (zeros for 0–16 and 23), independently of src/. */
function replayByHand(entries: readonly EventLogEntry[]): Map<number, Buffer> {
  const pcrs = new Map<number, Buffer>()
  for (const e of entries) pcrs.set(e.pcr, sha256(pcrs.get(e.pcr) ?? Buffer.alloc(32), e.digest))
  return pcrs
}

/** What a verifier checks, done with node:crypto, decodeQuoteBody and parseAttest only. */
function checkByHand(ev: Evidence, expectedHandle: Uint8Array) {
  const body = decodeQuoteBody(ev.body)
  const attest = parseAttest(body.attest)
  const sig = p1363(body.sig)
  const ak = createPublicKey({ key: Buffer.from(body.akPub), format: 'der', type: 'spki' })
  const signatureOk = verify('sha256', body.attest, { key: ak, dsaEncoding: 'ieee-p1363' }, sig.rs)
  const handleOk = Buffer.compare(attest.extraData, expectedHandle) === 0
  const digestOk = Buffer.compare(attest.quote!.pcrDigest, sha256(...body.pcrs.map(([, v]) => v))) === 0
  const replayed = replayByHand(ev.log?.entries ?? [])
  const replayMismatch = body.pcrs.filter(([i, v]) => Buffer.compare(replayed.get(i) ?? Buffer.alloc(32), v) !== 0).map(([i]) => i)
  return { body, attest, sig, ak, signatureOk, handleOk, digestOk, replayOk: replayMismatch.length === 0, replayMismatch }
}

/** The appraisal request for evidence over `c` (the relying party's own view of the handshake). */
function request(ev: Evidence, c: { hPoint: Uint8Array; staticPub: Uint8Array }, log: LogCursor = newLogCursor()) {
  return { evidence: ev, expectedHandle: deriveHandle('R', 'tpm2', c.hPoint, c.staticPub), attesterStaticPub: c.staticPub, log }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test('boot recipe, replay and log validation (no TPM)', async (t) => {
  const ev = bootRecipeEvents(RECIPE)
  t.same(
    ev.map((e) => [e.pcr, e.type]),
    [[0, 'firmware'], [1, 'config'], [4, 'bootloader'], [7, 'secure-boot'], [10, 'app']],
  )
  t.same(
    bootRecipeEvents({ ...RECIPE, firmwareImage: 'image', kernel: 'k' }).map((e) => [e.pcr, e.type, Buffer.from(e.data).toString()]),
    [[0, 'firmware', 'image'], [1, 'config', '{"debug":false,"svn":3,"firmware":"fw-1.4.2"}'], [4, 'bootloader', RECIPE.bootloader], [7, 'secure-boot', RECIPE.secureBoot], [7, 'kernel', 'k'], [10, 'app', RECIPE.app]],
    'firmwareImage replaces the PCR 0 data; a kernel follows secure boot on PCR 7',
  )
  t.throws(() => bootRecipeEvents({ ...RECIPE, kernel: 5 as unknown as string }), { code: 'ERR_INVALID_ARGUMENT' })
  t.equal(Buffer.from(ev[1]!.data).toString(), '{"debug":false,"svn":3,"firmware":"fw-1.4.2"}', 'config is this exact UTF-8 JSON')
  t.throws(() => bootRecipeEvents({ ...RECIPE, svn: -1 }), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => bootRecipeEvents({ ...RECIPE, debug: 'no' as unknown as boolean }), { code: 'ERR_INVALID_ARGUMENT' })
  t.same(hex(pcrResetValue(17)), 'ff'.repeat(32))
  t.same(hex(pcrResetValue(23)), '00'.repeat(32))

  const extended: Array<[number, string]> = []
  const bank: PcrBank = {
    pcrExtend: async (pcr, digest) => void extended.push([pcr, hex(digest)]),
    pcrRead: async () => new Map(),
  }
  const log = new MeasurementLog(bank)
  await log.measureBoot(RECIPE)
  t.same(extended, ev.map((e) => [e.pcr, hex(sha256(e.data))]), 'SHA-256(data) extended, in recipe order')
  const big = await log.measure(11, 'blob', new Uint8Array(4096))
  t.equal(big.data, undefined, 'data over MAX_EVENT_DATA: digest only')
  t.equal(log.length, 6)
  t.same(log.entries(4).map((e) => e.type), ['app', 'blob'])
  const ref = log.referenceSet('golden', [0, 10, 11, 12])
  const replayed = replayByHand(log.entries())
  t.same(ref, { name: 'golden', pcrs: { 0: hex(replayed.get(0)), 10: hex(replayed.get(10)), 11: hex(replayed.get(11)), 12: '00'.repeat(32) } }, 'referenceSet: the values the log predicts')
  t.equal(log.referenceSet('x', [1], 1234).expires, 1234)
  t.same([...replayLog(log.entries()).entries()].map(([i, v]) => [i, hex(v)]), [...replayByHand(log.entries()).entries()].map(([i, v]) => [i, hex(v)]))
  await t.rejects(log.measure(24, 'x', 'y'), { code: 'ERR_INVALID_ARGUMENT' })
  await t.rejects(log.measure(1, '', 'y'), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => log.entries(-1), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => new MeasurementLog(bank, [{ pcr: 0, digest: new Uint8Array(31), type: 'x' }]), { code: 'ERR_ATTEST_EVIDENCE' })
  t.throws(() => new MeasurementLog({} as PcrBank), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('tpm2 attester against swtpm (protocol correctness only: swtpm has no manufacturer EK)', { skip: noSwtpm }, async (t) => {
  await t.test('evidence over a channel-minted handle verifies with node:crypto alone', async (t) => {
    const { vault } = await tpm(t)
    const log = new MeasurementLog(vault)
    const attester = await Tpm2Attester.create({ vault, eventLog: log })
    t.match(attester.akHandle, /^ak-[0-9a-f]{16}$/, 'a new AK, its handle exposed for persisting')
    t.same(attester.pcrs, QUOTED, 'DEFAULT_PCR_SELECTION')
    await log.measureBoot(RECIPE)
    t.same(await log.check(), { ok: true, mismatched: [] })

    const { ctx, hPoint, staticPub } = channelContext()
    const ev = await attester.attest(ctx)
    t.equal(ev.suite, 'tpm2')
    t.equal(ev.fmt, FORMAT.TPM2_QUOTE)
    t.equal(ev.handleAlg, HANDLE_ALG)
    t.equal(ev.endorsements, undefined, 'no endorsements: the AK is pinned at the verifier')
    t.equal(ev.log?.from, 0)
    t.equal(ev.log?.entries.length, 5)

    const expected = deriveHandle('R', 'tpm2', hPoint, staticPub)
    const c = checkByHand(ev, expected)
    t.equal(c.attest.magic, 0xff544347, 'magic TPM_GENERATED_VALUE')
    t.equal(c.attest.type, 0x8018, 'type TPM_ST_ATTEST_QUOTE')
    t.same([c.sig.sigAlg, c.sig.hashAlg], [0x0018, 0x000b], 'TPMT_SIGNATURE: ECDSA, SHA-256')
    t.ok(c.signatureOk, 'the ECDSA signature over SHA-256(TPMS_ATTEST) verifies with the AK SPKI (ieee-p1363)')
    t.ok(c.handleOk, 'extraData = deriveHandle(R, tpm2, hPoint, staticPub)')
    t.same(c.attest.quote!.pcrSelect, [{ hashAlg: 0x000b, pcrs: QUOTED }], 'the quoted selection')
    t.same(c.body.pcrs.map(([i]) => i), QUOTED, 'PCR values reported ascending')
    t.ok(c.digestOk, 'pcrDigest = SHA-256(concatenated PCR values)')
    t.ok(c.replayOk, 'replaying the event log from zero PCRs reproduces the quoted values')
    t.same(Buffer.from(c.body.akPub), Buffer.from(await attester.akPublicSpki()), 'akPub = akPublicSpki()')
    t.equal(c.ak.asymmetricKeyDetails?.namedCurve, 'prime256v1')
    const pcrNow = await vault.pcrRead(QUOTED)
    t.same(c.body.pcrs.map(([i, v]) => [i, hex(v)]), QUOTED.map((i) => [i, hex(pcrNow.get(i))]), 'the values are the TPM PCRs')
    for (const e of ev.log!.entries) t.equal(hex(e.digest), hex(sha256(e.data!)), `${e.type}: digest = SHA-256(data)`)
    t.same(JSON.parse(Buffer.from(ev.log!.entries[1]!.data!).toString()), { debug: false, svn: 3, firmware: 'fw-1.4.2' })

    const tampered = Buffer.from(c.body.attest)
    tampered[tampered.length - 1]! ^= 1
    t.notOk(verify('sha256', tampered, { key: c.ak, dsaEncoding: 'ieee-p1363' }, c.sig.rs), 'a changed TPMS_ATTEST fails the signature')

    // a wrong handle fails the extraData comparison
    t.notOk(checkByHand(ev, deriveHandle('R', 'tpm2', randomBytes(32), staticPub)).handleOk, 'another handshake hash: handle mismatch')
    t.notOk(checkByHand(ev, deriveHandle('R', 'tpm2', hPoint, randomBytes(32))).handleOk, 'another static key: handle mismatch')
    t.notOk(checkByHand(ev, deriveHandle('I', 'tpm2', hPoint, staticPub)).handleOk, 'the other role: handle mismatch')
    t.notOk(checkByHand(ev, deriveHandle('R', 'sim', hPoint, staticPub)).handleOk, 'the other suite: handle mismatch')

    // a second context: a fresh quote over its own handle
    const second = channelContext()
    const ev2 = await attester.attest(second.ctx)
    const c2 = checkByHand(ev2, deriveHandle('R', 'tpm2', second.hPoint, second.staticPub))
    t.ok(c2.signatureOk && c2.handleOk && c2.digestOk && c2.replayOk, 'a second quote verifies over its own handle')
    t.notOk(checkByHand(ev2, expected).handleOk, 'and not over the first one (replay)')
  })

  await t.test('delta evidence: entries from logFrom; all of them when the log is shorter', async (t) => {
    const { vault } = await tpm(t)
    const log = new MeasurementLog(vault)
    const attester = await Tpm2Attester.create({ vault, eventLog: log })
    await log.measureBoot(RECIPE)
    const full = await attester.attest(channelContext().ctx)
    const delta = await attester.attest(channelContext(3).ctx)
    t.equal(delta.log?.from, 3)
    t.same(delta.log?.entries.map((e) => e.type), ['secure-boot', 'app'])
    t.same(full.log?.entries.slice(3).map((e) => hex(e.digest)), delta.log?.entries.map((e) => hex(e.digest)))
    const ahead = await attester.attest(channelContext(99).ctx)
    t.equal(ahead.log?.from, 0, 'a cursor past the log (re-measured after a TPM restart): the whole log')
    t.equal(ahead.log?.entries.length, 5)
    const noLog = await Tpm2Attester.create({ vault, akHandle: attester.akHandle, pcrs: [10, 1] })
    const e = await noLog.attest(channelContext().ctx)
    t.equal(e.log, undefined, 'no measurement log: no log in the evidence')
    t.same(decodeQuoteBody(e.body).pcrs.map(([i]) => i), [1, 10], 'a custom selection, ascending')
  })

  await t.test('a PCR extend outside the log: the quote verifies but the replay does not', async (t) => {
    const { vault } = await tpm(t)
    const log = new MeasurementLog(vault)
    const attester = await Tpm2Attester.create({ vault, eventLog: log })
    await log.measureBoot(RECIPE)
    await vault.pcrExtend(7, sha256(Buffer.from('a rogue secure-boot change, not logged')))
    const { ctx, hPoint, staticPub } = channelContext()
    const c = checkByHand(await attester.attest(ctx), deriveHandle('R', 'tpm2', hPoint, staticPub))
    t.ok(c.signatureOk && c.handleOk && c.digestOk, 'signature, handle and PCR digest still hold')
    t.notOk(c.replayOk, 'the event log no longer reproduces the quoted PCRs')
    t.same(c.replayMismatch, [7])
    t.same(await log.check(), { ok: false, mismatched: [7] }, 'MeasurementLog.check sees it too')
  })

  await t.test('refusals: forged or foreign contexts, aborts, vault failures, bad options', async (t) => {
    const { vault } = await tpm(t)
    const attester = await Tpm2Attester.create({ vault })
    const forged = { role: 'R', suite: 'tpm2', handle: new Uint8Array(32), logFrom: 0 } as const
    await t.rejects(attester.attest(forged), { code: 'ERR_INVALID_ARGUMENT' }, 'a hand-made context is refused (no quote oracle)')
    await t.rejects(attester.attest({ ...channelContext().ctx }), { code: 'ERR_INVALID_ARGUMENT' }, 'a copy of a minted context is refused too')
    await t.rejects(attester.attest(mintContext('R', 'sim', randomBytes(32), randomBytes(32))), { code: 'ERR_ATTEST_PROVER_FAILED' }, 'a context minted for sim (as the sim attester refuses tpm2)')

    const ac = new AbortController()
    ac.abort()
    await t.rejects(attester.attest(channelContext().ctx, ac.signal), { code: 'ERR_ABORTED' }, 'an already aborted signal')
    const ac2 = new AbortController()
    const during = attester.attest(channelContext().ctx, ac2.signal)
    ac2.abort()
    await t.rejects(during, { code: 'ERR_ABORTED' }, 'aborted while quoting')
    const ok = await attester.attest(channelContext().ctx, new AbortController().signal)
    t.equal(ok.suite, 'tpm2', 'a live signal does not get in the way')

    const doomed = await Tpm2Attester.create({ vault })
    await vault.deleteKey(doomed.akHandle)
    const err = await doomed.attest(channelContext().ctx).catch((e: unknown) => e)
    t.ok(isThroughlineError(err, 'ERR_ATTEST_PROVER_FAILED'), `ERR_ATTEST_PROVER_FAILED (got ${String(err)})`)
    t.ok(isThroughlineError((err as Error).cause, 'ERR_VAULT_KEY_NOT_FOUND'), 'the vault error is the cause')

    const signing = await vault.generateSigningKey('p256')
    await t.rejects(Tpm2Attester.create({ vault, akHandle: signing }), { code: 'ERR_INVALID_ARGUMENT' }, 'a signing key is not an AK')
    await t.rejects(Tpm2Attester.create({ vault, akHandle: 'ak-0000000000000000' }), { code: 'ERR_VAULT_KEY_NOT_FOUND' })
    await t.rejects(Tpm2Attester.create({ vault, pcrs: [] }), { code: 'ERR_INVALID_ARGUMENT' })
    await t.rejects(Tpm2Attester.create({ vault, pcrs: [24] }), { code: 'ERR_INVALID_ARGUMENT' })
    const other: PcrBank = { pcrExtend: async () => {}, pcrRead: async () => new Map() }
    await t.rejects(Tpm2Attester.create({ vault, eventLog: new MeasurementLog(other) }), { code: 'ERR_INVALID_ARGUMENT' }, 'a log over another TPM')
  })

  await t.test('the AK and the log persist; a TPM restart resets the PCRs and the log is re-measured', async (t) => {
    const { swtpm, vault } = await tpm(t)
    const dir = t.testdir()
    const logPath = join(dir, 'measurements.json')
    const log = new MeasurementLog(vault)
    const a1 = await Tpm2Attester.create({ vault, eventLog: log })
    await log.measureBoot(RECIPE)
    await log.save(logPath)

    const loaded = await MeasurementLog.load(vault, logPath)
    t.same(loaded.entries(), log.entries(), 'the log round-trips through its file')
    t.same(await loaded.check(), { ok: true, mismatched: [] })
    const a2 = await Tpm2Attester.create({ vault, akHandle: a1.akHandle, eventLog: loaded })
    t.same(Buffer.from(await a2.akPublicSpki()), Buffer.from(await a1.akPublicSpki()), 'the same AK from its persisted handle')
    const { ctx, hPoint, staticPub } = channelContext()
    const c = checkByHand(await a2.attest(ctx), deriveHandle('R', 'tpm2', hPoint, staticPub))
    t.ok(c.signatureOk && c.handleOk && c.digestOk && c.replayOk, 'evidence with the loaded log verifies')

    await swtpm.restart() // startup-clear: every PCR back to its reset value
    const after = await loaded.check()
    t.same(after, { ok: false, mismatched: QUOTED }, 'the log no longer matches the reset PCRs')
    const stale = channelContext(5)
    const staleEv = await a2.attest(stale.ctx)
    t.equal(staleEv.log?.from, 0, 'the TPM was reset since the previous quote: the log from 0, whatever the cursor')
    const cs = checkByHand(staleEv, deriveHandle('R', 'tpm2', stale.hPoint, stale.staticPub))
    t.ok(cs.signatureOk && cs.handleOk && cs.digestOk, 'the AK still quotes after the restart')
    t.same(cs.body.pcrs.map(([, v]) => hex(v)), QUOTED.map(() => '00'.repeat(32)), 'PCRs reset to zero')
    t.notOk(cs.replayOk, 'a stale log fails the replay')
    await loaded.clear()
    await loaded.measureBoot(RECIPE)
    t.same(await loaded.check(), { ok: true, mismatched: [] }, 're-measured')
    const fresh = channelContext()
    const cf = checkByHand(await a2.attest(fresh.ctx), deriveHandle('R', 'tpm2', fresh.hPoint, fresh.staticPub))
    t.ok(cf.signatureOk && cf.handleOk && cf.digestOk && cf.replayOk, 'evidence verifies again after re-measuring')
    t.equal((await a2.attest(channelContext(5).ctx)).log?.from, 5, 'no reset since the previous quote: the delta from the cursor again')
    t.same(cf.body.pcrs, c.body.pcrs, 'the same boot recipe gives the same PCR values')

    t.equal((await MeasurementLog.load(vault, join(dir, 'missing.json'), { missingOk: true })).length, 0, 'missingOk: an empty log')
    await t.rejects(MeasurementLog.load(vault, join(dir, 'missing.json')), { code: 'ERR_INVALID_ARGUMENT' })
    const badPath = join(dir, 'bad.json')
    writeFileSync(badPath, '{"format":"throughline-measurement-log","version":1,"entries":[{"pcr":0,"type":"x","digest":"' + '00'.repeat(32) + '","data":"AA=="}]}')
    await t.rejects(MeasurementLog.load(vault, badPath), { code: 'ERR_ATTEST_EVIDENCE' }, 'data that does not hash to its digest')
    writeFileSync(badPath, '{"format":"something-else","version":1,"entries":[]}')
    await t.rejects(MeasurementLog.load(vault, badPath), { code: 'ERR_ATTEST_EVIDENCE' }, 'another format')
    writeFileSync(badPath, 'not json')
    await t.rejects(MeasurementLog.load(vault, badPath), { code: 'ERR_ATTEST_EVIDENCE' })
    writeFileSync(badPath, '{"format":"throughline-measurement-log","version":1,"entries":[{"pcr":99,"type":"x","digest":"' + '00'.repeat(32) + '"}]}')
    await t.rejects(MeasurementLog.load(vault, badPath), { code: 'ERR_ATTEST_EVIDENCE', message: /bad\.json: event log: an entry has no PCR index/ }, 'a PCR index out of range')
  })
  await t.test('appraised by the Verifier: AK pinned, reference values from the measured PCRs → affirming; changes after them → not', async (t) => {
    const { vault } = await tpm(t)
    const log = new MeasurementLog(vault)
    const attester = await Tpm2Attester.create({ vault, eventLog: log })
    await log.measureBoot(RECIPE)
    const measured = await vault.pcrRead(QUOTED)
    const refs = new ReferenceValues([{ name: 'device-golden', pcrs: Object.fromEntries(QUOTED.map((p) => [p, hex(measured.get(p))])) }])
    t.same(log.referenceSet('device-golden'), refs.list()[0], 'MeasurementLog.referenceSet predicts the same values')
    const verifier = new Verifier({ id: 'test-verifier', trustAnchors: { tpmAks: [await attester.akPublicSpki()] }, referenceValues: refs })

    const c1 = channelContext()
    const r1 = await verifier.appraise(request(await attester.attest(c1.ctx), c1))
    t.equal(r1.status, 'affirming', `affirming (${r1.reason ?? ''} ${r1.detail ?? ''})`)
    t.equal(r1.suite, 'tpm2')
    t.equal(r1.trustVector.hardware, 2, 'hardware 2: a pinned TPM AK')
    t.equal(r1.trustVector.executables, 2, 'executables 2: the reference values match')
    t.equal(r1.trustVector.configuration, 2, 'configuration 2: debug off')
    t.match(r1.claims, { svn: 3, debug: false, firmware: 'fw-1.4.2' })
    t.same(Buffer.from(r1.nonce), Buffer.from(deriveHandle('R', 'tpm2', c1.hPoint, c1.staticPub)))
    t.same(Buffer.from(r1.keyAttestation.pub), Buffer.from(c1.staticPub))

    // delta evidence across rounds of one channel: the second round sends only what the cursor lacks
    const cursor = newLogCursor()
    const ra = channelContext(cursor.count)
    t.equal((await verifier.appraise(request(await attester.attest(ra.ctx), ra, cursor))).status, 'affirming')
    t.equal(cursor.count, 5)
    await sleep(5) // the verifier wants the TPM clock (ms) to advance between rounds on one cursor
    const rb = channelContext(cursor.count)
    const evb = await attester.attest(rb.ctx)
    t.same([evb.log?.from, evb.log?.entries.length], [5, 0], 'round 2: an empty delta from the cursor')
    t.equal((await verifier.appraise(request(evb, rb, cursor))).status, 'affirming', 'round 2 affirming on the cursor')

    const wrong = channelContext()
    const rw = await verifier.appraise(request(await attester.attest(wrong.ctx), channelContext()))
    t.same([rw.status, rw.reason], ['contraindicated', 'handle_mismatch'], 'evidence for another handshake')

    const unpinned = new Verifier({ id: 'other', trustAnchors: { tpmAks: [] }, referenceValues: refs })
    const cu = channelContext()
    const ru = await unpinned.appraise(request(await attester.attest(cu.ctx), cu))
    t.same([ru.status, ru.reason], ['contraindicated', 'unknown_ak'], 'an AK the verifier did not enrol')

    // measured (and logged) after the reference values were taken: a warning, not affirming
    await log.measure(10, 'app', 'an app update the reference values do not know')
    const cm = channelContext()
    const rm = await verifier.appraise(request(await attester.attest(cm.ctx), cm))
    t.same([rm.status, rm.reason], ['warning', 'reference_mismatch'], 'a logged change after the reference values')
    t.equal(rm.trustVector.executables, 33)

    // extended without the log: the replay fails hard
    await vault.pcrExtend(4, sha256(Buffer.from('rogue bootloader, not logged')))
    const cx = channelContext()
    const rx = await verifier.appraise(request(await attester.attest(cx.ctx), cx))
    t.same([rx.status, rx.reason], ['contraindicated', 'log_replay_mismatch'], 'an unlogged extend')
  })

  await t.test('one reference-value set for both suites: the sim boot measured into the TPM gives the sim platform PCRs', async (t) => {
    const { vault } = await tpm(t)
    const log = new MeasurementLog(vault)
    const attester = await Tpm2Attester.create({ vault, eventLog: log })
    const root = SimRoot.generate()
    const platform = new SimPlatform({ root, firmware: 'sim-fw-1.0', svn: 1 })
    await log.measureBoot({
      firmware: 'sim-fw-1.0',
      svn: 1,
      debug: false,
      firmwareImage: 'sim-firmware sim-fw-1.0',
      bootloader: 'sim-bootloader 1',
      secureBoot: 'sim-secure-boot enabled',
      kernel: 'sim-kernel 1',
      app: 'sim-app throughline',
    })
    t.same(
      log.entries().map((e) => [e.pcr, e.type, hex(e.digest)]),
      platform.eventLog.map((e) => [e.pcr, e.type, hex(e.digest)]),
      'the same events as the sim platform boot',
    )
    const tpmValues = await vault.pcrRead(QUOTED)
    t.same(QUOTED.map((p) => hex(tpmValues.get(p))), platform.pcrValues(QUOTED).map(([, v]) => hex(v)), 'the same PCR values')

    const refs = new ReferenceValues([platform.referenceSet('sim-golden')])
    const verifier = new Verifier({ id: 'both', trustAnchors: { tpmAks: [await attester.akPublicSpki()], simRoots: [root.publicKeySpki] }, referenceValues: refs })
    const ct = channelContext()
    const rt = await verifier.appraise(request(await attester.attest(ct.ctx), ct))
    t.equal(rt.status, 'affirming', `tpm2 evidence affirming under the sim reference set (${rt.reason ?? ''} ${rt.detail ?? ''})`)
    const hPoint = randomBytes(32)
    const staticPub = randomBytes(32)
    const rs = await verifier.appraise({
      evidence: await new SimAttester(platform).attest(mintContext('R', 'sim', hPoint, staticPub)),
      expectedHandle: deriveHandle('R', 'sim', hPoint, staticPub),
      attesterStaticPub: staticPub,
      log: newLogCursor(),
    })
    t.same([rs.trustVector.executables, rs.trustVector.configuration], [2, 2], 'sim evidence matches the same reference set and config policy')
    t.same([rs.status, rs.reason], ['warning', 'sim_untrusted'], 'sim stays below affirming under the default policy')
  })
})
