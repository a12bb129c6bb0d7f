// The tpm2 suite attester (src/attest/tpm2.ts) against a private swtpm: evidence over a
// channel-minted handle, checked here with node:crypto alone (signature over SHA-256(TPMS_ATTEST),
// extraData = the handle, pcrDigest = SHA-256 of the reported PCR values, the event log replayed
// from reset PCRs reproduces them); failures for a wrong handle, an extend outside the log, forged
// contexts, aborts and vault errors; the measurement log across save/load and a TPM restart; and
// appraisal by the Verifier (src/attest/verifier.ts) with the AK pinned, including one
// reference-value set that appraises both the sim platform and the TPM measured the same way.
// Then secure channels with tpm2 attestation over the memory transport (one private swtpm for the
// group): a responder's Tpm2Attester appraised by the initiator's local Verifier (AK pinned,
// reference values from MeasurementLog.referenceSet) opens an affirming channel; replayed evidence,
// a logged change after the reference values, an unlogged extend, and an unlogged extend at run
// time under streaming re-attestation each fail with their cause on both ends, and so does a power
// loss (a restart without TPM2_Shutdown leaves the TPM clock unsafe).
// swtpm proves protocol correctness, not silicon binding: it has no manufacturer EK.
import t, { type Test } from 'tap'
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import { Node, silentLogger, local, route } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { startEcho } from '../src/services/index.ts'
import { SecureChannels, SoftwareIdentity, type AttestationOptions, type SecureChannel, type SecureListener } from '../src/channel/index.ts'
import { TpmVault } from '../src/vault/index.ts'
import { parseAttest } from '../src/vault/tpm/attest.ts'
import { decodeQuoteBody } from '../src/attest/evidence.ts'
import { deriveHandle, mintContext } from '../src/attest/handle.ts'
import { FORMAT, HANDLE_ALG, type AttestationContext, type Attester, type EventLogEntry, type Evidence } from '../src/attest/types.ts'
import { MeasurementLog, SIM_PLATFORM_BOOT, Tpm2Attester, bootRecipeEvents, pcrResetValue, replayLog, type BootRecipe, type PcrBank } from '../src/attest/tpm2.ts'
import { ReferenceValues, Verifier, newLogCursor, type LogCursor } from '../src/attest/verifier.ts'
import { SimAttester, SimPlatform, SimRoot } from '../src/attest/sim.ts'
import { startSwtpm, swtpmAvailable, type Swtpm } from './helpers/swtpm.ts'
import { until } from './helpers/wait.ts'

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
  let vault!: TpmVault // assigned below, after the teardown that closes it (so swtpm stops even if opening fails)
  t.teardown(async () => {
    if ((vault as TpmVault | undefined) !== undefined) await vault.close().catch(() => {})
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
    await log.measureBoot(SIM_PLATFORM_BOOT)
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

// ------------------------------------------------------------------------------------------------
// Secure channels with tpm2 attestation (the channel wiring of test/attest-channel.test.ts, with
// the evidence from a Tpm2Attester over one private swtpm instead of the sim suite).

/** A Tpm2Attester wrapper that records each piece of evidence and, when `replay` is set, hands out the recorded one again. */
class ReplayingAttester implements Attester {
  readonly suite = 'tpm2' as const
  inner: Tpm2Attester
  replay = false
  last: Evidence | undefined
  constructor(inner: Tpm2Attester) {
    this.inner = inner
  }
  async attest(ctx: AttestationContext, signal?: AbortSignal): Promise<Evidence> {
    if (this.replay && this.last !== undefined) return this.last
    this.last = await this.inner.attest(ctx, signal)
    return this.last
  }
}

function closeCause(err: unknown): unknown {
  return isThroughlineError(err) ? err.details?.['cause'] : undefined
}

t.test('secure channels with tpm2 attestation over swtpm (protocol correctness only: swtpm has no manufacturer EK)', { skip: noSwtpm }, async (t) => {
  // the memory transport holds no handle open and channel timers are unref'd: keep the loop alive
  const alive = setInterval(() => {}, 1_000)
  t.teardown(() => clearInterval(alive))

  // one private swtpm for the group; `vault`, `log` and the attester are replaced by freshBoot()
  const swtpm = await startSwtpm()
  const vaultDir = t.testdir()
  let vault!: TpmVault // assigned below, after the teardown that closes it (so swtpm stops even if opening fails)
  t.teardown(async () => {
    if ((vault as TpmVault | undefined) !== undefined) await vault.close().catch(() => {})
    await swtpm.stop()
  })
  vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: vaultDir })
  let log = new MeasurementLog(vault)
  const attester = new ReplayingAttester(await Tpm2Attester.create({ vault, eventLog: log }))
  const akHandle = attester.inner.akHandle
  const refs = new ReferenceValues()
  const verifier = new Verifier({ id: 'channel-verifier', trustAnchors: { tpmAks: [await attester.inner.akPublicSpki()] }, referenceValues: refs })
  await log.measureBoot(RECIPE)
  refs.add(log.referenceSet('device-golden'))
  /**
   * A freshly booted device: an orderly power cycle (the vault's close sends TPM2_Shutdown(CLEAR),
   * so the TPM clock stays `safe`), PCRs back to their reset values, the same AK from its
   * persisted handle, the boot measured again into a new log and its reference values approved.
   */
  const freshBoot = async (): Promise<void> => {
    await vault.close()
    await swtpm.restart()
    vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: vaultDir })
    log = new MeasurementLog(vault)
    attester.inner = await Tpm2Attester.create({ vault, akHandle, eventLog: log })
    await log.measureBoot(RECIPE)
    refs.add(log.referenceSet('device-golden'))
    attester.replay = false
    attester.last = undefined
  }

  const net = new MemoryNetwork()
  const mk = async (name: string): Promise<Node> => {
    const node = await new Node({ name, logger: silentLogger }).start()
    node.addTransport(new MemoryTransport(node, { network: net }))
    await (node.transport(4) as MemoryTransport).listen(name, { allow: ['echo', 'secure'], transit: true })
    t.teardown(() => node.stop())
    return node
  }
  // D: the device (responder), its evidence from the TPM; C: the relying party (initiator).
  const D = await mk('Dtpm')
  startEcho(D)
  const dCh = new SecureChannels(D, { identity: SoftwareIdentity.generate(), attestation: { attesters: [attester] } })
  const listener: SecureListener = await dCh.listen('secure', { allow: ['echo'], handshakeTimeout: 5_000 })
  const listenerErrors: ThroughlineError[] = []
  listener.on('error', (e: ThroughlineError) => listenerErrors.push(e))
  const C = await mk('Ctpm')
  const cCh = new SecureChannels(C, { identity: SoftwareIdentity.generate() })
  const connect = (attestation: AttestationOptions): Promise<SecureChannel> => cCh.connect(route('4#Dtpm', 'secure'), { attestation, handshakeTimeout: 5_000 })
  const echo = async (ch: SecureChannel, text = 'hello'): Promise<string> => Buffer.from((await C.request([ch.address, local('echo')], Buffer.from(text), { timeout: 3_000 })).payload).toString()
  /** The next listener error (a refused handshake at D). */
  const nextListenerError = async (): Promise<ThroughlineError> => {
    const n = listenerErrors.length
    await until(() => listenerErrors.length > n, 5_000, 'an error at the listener')
    return listenerErrors[n]!
  }

  for (const mode of ['handshake', 'post-handshake'] as const) {
    await t.test(`${mode}: the initiator requires tpm2 of the responder; affirming, and echo works through the channel`, async (t) => {
      const opened = new Promise<SecureChannel>((r) => listener.once('channel', r))
      const ch = await connect({ require: ['tpm2'], verifier, mode })
      const dSide = await opened
      const r = ch.attestation!
      t.equal(r.status, 'affirming', `affirming (${r.reason ?? ''} ${r.detail ?? ''})`)
      t.equal(r.suite, 'tpm2')
      t.equal(r.verifierId, 'channel-verifier')
      t.equal(r.trustVector.hardware, 2, 'hardware 2: a pinned AK (swtpm here: protocol, not silicon)')
      t.equal(r.trustVector.executables, 2, 'executables 2: the reference values from MeasurementLog.referenceSet match')
      t.equal(r.claims?.['referenceSet'], 'device-golden', 'the matching reference set is named')
      t.same(Buffer.from(r.keyAttestation.pub), Buffer.from(dCh.staticKeyPair.publicKey), 'the result is about the static key of this channel')
      t.equal(ch.peer?.attributes['attest.suite'], 'tpm2', 'the result is an attribute of the peer')
      t.equal(dSide.attestation, undefined, 'the responder required nothing')
      t.equal(await echo(ch), 'hello')
      ch.close()
    })
  }

  await t.test('replayed evidence (bound to an earlier channel) → ATTEST_VERIFIER_FAILED, handle_mismatch, on both ends', async (t) => {
    const first = await connect({ require: ['tpm2'], verifier })
    t.equal(first.attestation?.status, 'affirming', 'an earlier channel: its evidence recorded')
    first.close()
    attester.replay = true
    const err = await connect({ require: ['tpm2'], verifier }).catch((e: unknown) => e)
    attester.replay = false
    t.ok(isThroughlineError(err, 'ERR_ATTEST_VERIFIER_FAILED'), `the initiator refuses (${String((err as Error).message)})`)
    t.equal(closeCause(err), 'ATTEST_VERIFIER_FAILED', 'initiator cause')
    t.equal((err as ThroughlineError).details?.['reason'], 'handle_mismatch', 'the quote carries the handle of the earlier handshake as extraData')
    const le = await nextListenerError()
    t.equal(closeCause(le), 'ATTEST_VERIFIER_FAILED', 'the listener names the same cause')
    t.equal(le.details?.['detail'], 'handle_mismatch', 'and the reason')
    t.equal(listener.channelsOpen, 0)
    const again = await connect({ require: ['tpm2'], verifier })
    t.equal(again.attestation?.status, 'affirming', 'fresh evidence passes again')
    again.close()
  })

  await t.test('a logged measurement after the reference values → POLICY_DENY (reference_mismatch); an unlogged extend → ATTEST_VERIFIER_FAILED (log_replay_mismatch)', async (t) => {
    await freshBoot()
    await log.measure(10, 'app', 'throughline-device-0.2.0 (not in the reference values)')
    t.same(await log.check(), { ok: true, mismatched: [] }, 'the log still replays to the PCRs')
    const err = await connect({ require: ['tpm2'], verifier }).catch((e: unknown) => e)
    t.ok(isThroughlineError(err, 'ERR_ATTEST_POLICY_DENY'), `the initiator refuses (${String((err as Error).message)})`)
    t.equal(closeCause(err), 'POLICY_DENY', 'initiator cause')
    t.equal((err as ThroughlineError).details?.['reason'], 'reference_mismatch')
    t.equal((err as ThroughlineError).details?.['status'], 'warning', 'a warning, below the required affirming')
    const le = await nextListenerError()
    t.equal(closeCause(le), 'POLICY_DENY', 'the listener names the same cause')
    t.equal(le.details?.['detail'], 'reference_mismatch')

    const warned = await connect({ require: ['tpm2'], verifier, minStatus: 'warning' })
    t.same([warned.attestation?.status, warned.attestation?.reason], ['warning', 'reference_mismatch'], 'a relying party that accepts warning opens, and sees why')
    warned.close()
    refs.add(log.referenceSet('device-golden'))
    const approved = await connect({ require: ['tpm2'], verifier })
    t.equal(approved.attestation?.status, 'affirming', 'the update approved (reference values taken again): affirming')
    approved.close()

    await vault.pcrExtend(4, sha256(Buffer.from('rogue bootloader, not logged')))
    const err2 = await connect({ require: ['tpm2'], verifier }).catch((e: unknown) => e)
    t.ok(isThroughlineError(err2, 'ERR_ATTEST_VERIFIER_FAILED'), `the initiator refuses (${String((err2 as Error).message)})`)
    t.equal(closeCause(err2), 'ATTEST_VERIFIER_FAILED', 'initiator cause')
    t.equal((err2 as ThroughlineError).details?.['reason'], 'log_replay_mismatch')
    const le2 = await nextListenerError()
    t.equal(closeCause(le2), 'ATTEST_VERIFIER_FAILED', 'the listener names the same cause')
    t.equal(le2.details?.['detail'], 'log_replay_mismatch')
    t.equal(listener.channelsOpen, 0)
  })

  await t.test('streaming re-attestation: rounds pass; an unlogged extend at run time closes the channel on both ends within one interval plus a quote', async (t) => {
    await freshBoot()
    // what one quote costs here (the prover's part of a round), for the bound below
    const quoteMs: number[] = []
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now()
      await attester.inner.attest(channelContext().ctx)
      quoteMs.push(performance.now() - t0)
    }
    const quote = quoteMs.sort((a, b) => a - b)[2]!
    const INTERVAL = 300
    const opened = new Promise<SecureChannel>((r) => listener.once('channel', r))
    const ch = await connect({ require: ['tpm2'], verifier, reattestInterval: INTERVAL })
    const dSide = await opened
    const first = ch.attestation!
    t.equal(first.status, 'affirming')
    const next = await ch.reattest()
    t.equal(next.status, 'affirming', 'an on-demand round passes (delta log from the cursor)')
    t.not(hex(next.nonce), hex(first.nonce), 'over a new handle')
    await until(() => (ch.attestation?.iat ?? 0) > next.iat, 3_000, 'an interval round')
    t.pass('interval rounds pass')
    t.equal(await echo(ch), 'hello')

    const closedC = new Promise<ThroughlineError>((r) => ch.once('close', r))
    const closedD = new Promise<ThroughlineError>((r) => dSide.once('close', r))
    const changedAt = performance.now()
    await vault.pcrExtend(10, sha256(Buffer.from('an app swapped at run time, not logged')))
    const [ec, ed] = await Promise.all([closedC, closedD])
    const took = performance.now() - changedAt
    const bound = INTERVAL + quote + 700 // + scheduling slack on a shared machine
    t.ok(took < bound, `closed ${Math.round(took)} ms after the extend (interval ${INTERVAL} ms, quote ${quote.toFixed(1)} ms, bound ${Math.round(bound)} ms)`)
    t.ok(isThroughlineError(ec, 'ERR_ATTEST_VERIFIER_FAILED'), `initiator: ${ec.message}`)
    t.equal(closeCause(ec), 'ATTEST_VERIFIER_FAILED', 'initiator cause')
    t.equal(ec.details?.['reason'], 'log_replay_mismatch')
    t.ok(isThroughlineError(ed, 'ERR_ATTEST_VERIFIER_FAILED'), `responder: ${ed.message}`)
    t.equal(closeCause(ed), 'ATTEST_VERIFIER_FAILED', 'the device learns why')
    t.match(ed.message, /closed by the peer/)
    t.equal(ch.state, 'closed')
    t.equal(dSide.state, 'closed')
  })

  await t.test('a power loss (swtpm restarted without TPM2_Shutdown): clock safe = 0 → ATTEST_VERIFIER_FAILED (clock_unsafe) on both ends, even re-measured', async (t) => {
    await freshBoot()
    const ok = await connect({ require: ['tpm2'], verifier })
    t.equal(ok.attestation?.status, 'affirming', 'affirming before the power loss')
    ok.close()
    await swtpm.restart() // no TPM2_Shutdown first: the TPM cannot vouch that its clock never went back
    await log.clear()
    await log.measureBoot(RECIPE)
    t.same(await log.check(), { ok: true, mismatched: [] }, 'the boot measured again, the log matches the PCRs')
    const err = await connect({ require: ['tpm2'], verifier }).catch((e: unknown) => e)
    t.ok(isThroughlineError(err, 'ERR_ATTEST_VERIFIER_FAILED'), `the initiator refuses (${String((err as Error).message)})`)
    t.equal(closeCause(err), 'ATTEST_VERIFIER_FAILED', 'initiator cause')
    t.equal((err as ThroughlineError).details?.['reason'], 'clock_unsafe')
    const le = await nextListenerError()
    t.equal(closeCause(le), 'ATTEST_VERIFIER_FAILED', 'the listener names the same cause')
    t.equal(le.details?.['detail'], 'clock_unsafe')
  })
})
