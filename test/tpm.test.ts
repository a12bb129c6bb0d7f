// The project's own TPM 2.0 client (src/vault/tpm/) against a private swtpm per test group, plus
// unit tests of response-code decoding, marshalling, TPMS_ATTEST parsing and the transport
// (fake TPM servers). /dev/tpmrm0 is not tested: there is no TPM device here.
import t, { type Test } from 'tap'
import { createHash, randomBytes, verify } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import {
  TPM_ALG,
  TPM_CC,
  TPM_HT,
  TPM_PT,
  TPM_ST,
  TPMA_OBJECT,
  TpmClient,
  TpmReader,
  TpmWriter,
  attestationKeyTemplate,
  decodeRc,
  describeRc,
  eccPublicKeyObject,
  eccPublicPoint,
  encodePcrSelection,
  isRetryableRc,
  objectName,
  openTpmTransport,
  parseAttest,
  parsePublic,
  parseSignature,
  encodeSignature,
  parseTpmEndpoint,
  policyPcrDigest,
  publicArea,
  sealedDataTemplate,
  signatureToP1363,
  signingKeyTemplate,
  srkTemplate,
  tpmError,
  tpmErrorCode,
  writePcrSelection,
  type KeyBlobs,
  type TpmSignature,
  type TpmTransport,
} from '../src/vault/tpm/index.ts'
import { startSwtpm, swtpmAvailable } from './helpers/swtpm.ts'

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest()
}
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const p1363 = (sig: TpmSignature): Buffer => Buffer.from(signatureToP1363(sig))

/** A transport wrapper counting commands by command code. */
class CountingTransport implements TpmTransport {
  readonly counts = new Map<number, number>()
  readonly inner: TpmTransport
  constructor(inner: TpmTransport) {
    this.inner = inner
  }
  get endpoint(): string {
    return this.inner.endpoint
  }
  send(command: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    const cc = Buffer.from(command).readUInt32BE(6)
    this.counts.set(cc, (this.counts.get(cc) ?? 0) + 1)
    return this.inner.send(command, signal)
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

function expectTpmError(t: Test, err: unknown, name: string): ThroughlineError {
  t.ok(isThroughlineError(err, 'ERR_TPM'), `ERR_TPM (${String(err)})`)
  const e = err as ThroughlineError
  t.equal(e.details?.name, name, `names ${name}`)
  t.match(e.message, name)
  return e
}

// ---------------------------------------------------------------------------------------------
// Pure unit tests

t.test('response codes decode into named codes with handle/parameter/session numbers', async (t) => {
  const cases: Array<[number, string, 0 | 1, ('handle' | 'parameter' | 'session')?, number?]> = [
    [0x000, 'TPM_RC_SUCCESS', 0],
    [0x100, 'TPM_RC_INITIALIZE', 0],
    [0x101, 'TPM_RC_FAILURE', 0],
    [0x143, 'TPM_RC_COMMAND_CODE', 0],
    [0x128, 'TPM_RC_PCR_CHANGED', 0],
    [0x99d, 'TPM_RC_POLICY_FAIL', 1, 'session', 1],
    [0x1c4, 'TPM_RC_VALUE', 1, 'parameter', 1],
    [0x1df, 'TPM_RC_INTEGRITY', 1, 'parameter', 1],
    [0x2d2, 'TPM_RC_SCHEME', 1, 'parameter', 2],
    [0x2d6, 'TPM_RC_SYMMETRIC', 1, 'parameter', 2],
    [0x2e6, 'TPM_RC_CURVE', 1, 'parameter', 2],
    [0xfc4, 'TPM_RC_VALUE', 1, 'parameter', 15],
    [0x18b, 'TPM_RC_HANDLE', 1, 'handle', 1],
    [0x28b, 'TPM_RC_HANDLE', 1, 'handle', 2],
    [0x08b, 'TPM_RC_HANDLE', 1],
    [0x98e, 'TPM_RC_AUTH_FAIL', 1, 'session', 1],
    [0xaa2, 'TPM_RC_BAD_AUTH', 1, 'session', 2],
    [0x902, 'TPM_RC_OBJECT_MEMORY', 0],
    [0x903, 'TPM_RC_SESSION_MEMORY', 0],
    [0x921, 'TPM_RC_LOCKOUT', 0],
    [0x922, 'TPM_RC_RETRY', 0],
    [0x908, 'TPM_RC_YIELDED', 0],
    [0x90a, 'TPM_RC_TESTING', 0],
  ]
  for (const [rc, name, format, kind, index] of cases) {
    const d = decodeRc(rc)
    t.equal(d.name, name, `0x${rc.toString(16)} is ${name}`)
    t.equal(d.format, format, `0x${rc.toString(16)} format ${format}`)
    t.equal(d.kind, kind, `0x${rc.toString(16)} kind ${kind}`)
    t.equal(d.index, index, `0x${rc.toString(16)} index ${index}`)
  }
  t.equal(decodeRc(0x99d).code, 0x09d)
  t.ok(decodeRc(0x902).warning)
  t.notOk(decodeRc(0x99d).warning)
  t.match(decodeRc(0x001).name, /TPM12/)
  t.match(decodeRc(0x500).name, /VENDOR/)
  t.match(decodeRc(0x0bf).name, /UNKNOWN/)
  t.match(decodeRc(0x12345).name, /UNKNOWN/)
  t.equal(describeRc(0x99d), 'TPM_RC_POLICY_FAIL (0x99d), session 1')
  t.equal(tpmErrorCode(tpmError(0x99d)), 0x09d, 'base code of an ERR_TPM error')
  t.equal(tpmErrorCode(new Error('x')), undefined)
  t.ok(isRetryableRc(0x922) && isRetryableRc(0x908) && isRetryableRc(0x90a))
  t.notOk(isRetryableRc(0x902))

  const e = tpmError(0x99d, TPM_CC.Unseal)
  t.equal(e.code, 'ERR_TPM')
  t.same(e.details, { rc: 0x99d, code: 0x09d, name: 'TPM_RC_POLICY_FAIL', command: 'TPM2_Unseal', kind: 'session', index: 1 })
  t.match(e.message, /TPM2_Unseal failed: TPM_RC_POLICY_FAIL \(0x99d\), session 1/)

  // A whole error response, as a hex literal.
  t.throws(() => TpmClient.decodeResponse(TPM_CC.Unseal, hex('8001 0000000a 0000099d')), { code: 'ERR_TPM', details: { name: 'TPM_RC_POLICY_FAIL', index: 1 } })
  t.throws(() => TpmClient.decodeResponse(TPM_CC.FlushContext, hex('8001 0000000a 000001c4')), { code: 'ERR_TPM', details: { name: 'TPM_RC_VALUE', kind: 'parameter', index: 1 } })
})

t.test('commands marshal to the bytes the notes verified', async (t) => {
  t.equal(Buffer.from(TpmClient.encodeCommand(TPM_CC.GetRandom, { params: hex('0008') })).toString('hex'), '80010000000c0000017b0008')
  t.equal(Buffer.from(TpmClient.encodeCommand(TPM_CC.Startup, { params: hex('0000') })).toString('hex'), '80010000000c000001440000')
  // With a password session: handle area, authSize 9, TPMS_AUTH_COMMAND (TPM_RS_PW, empty nonce, attrs 0, empty hmac).
  const c = TpmClient.encodeCommand(TPM_CC.Unseal, { handles: [0x80000001], auths: [{ handle: 0x40000009 }] })
  t.equal(Buffer.from(c).toString('hex'), '8002' + '0000001b' + '0000015e' + '80000001' + '00000009' + '40000009' + '0000' + '00' + '0000')
  t.equal(Buffer.from(encodePcrSelection([{ hashAlg: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 7] }])).toString('hex'), '00000001000b038f0000')
  // A successful response with a session: handles, parameterSize, params, auth response.
  const r = TpmClient.decodeResponse(TPM_CC.Load, hex('8002 0000001b 00000000 80000002 00000004 0002abcd 0000 01 0000'), {
    auths: [{ handle: 0x40000009 }],
    outHandles: 1,
  })
  t.same(r.handles, [0x80000002])
  t.equal(Buffer.from(r.params.tpm2b()).toString('hex'), 'abcd')
  // Short / malformed responses are typed errors.
  t.throws(() => TpmClient.decodeResponse(TPM_CC.GetRandom, hex('8001 0000000e 00000000 0008 0102')).params.tpm2b('randomBytes'), {
    code: 'ERR_TPM_MALFORMED',
    details: { field: 'randomBytes', need: 8, have: 2 },
  })
  t.throws(() => TpmClient.decodeResponse(TPM_CC.GetRandom, hex('8001 00000010 00000000')), { code: 'ERR_TPM_MALFORMED' })
  t.throws(() => TpmClient.decodeResponse(TPM_CC.GetRandom, hex('8001 0000')), { code: 'ERR_TPM_MALFORMED' })
  t.throws(() => new TpmReader(hex('0005 0102'), 'x').tpm2b(), { code: 'ERR_TPM_MALFORMED', details: { need: 5, have: 2 } })
  t.throws(() => new TpmReader(hex('00000011'), 'x').u64(), { code: 'ERR_TPM_MALFORMED' })
})

t.test('templates, Names, signatures and PolicyPCR digests', async (t) => {
  const srk = srkTemplate()
  t.equal(srk.objectAttributes, 0x00030472)
  t.equal(signingKeyTemplate().objectAttributes, 0x00040072)
  t.equal(signingKeyTemplate({ noDA: true }).objectAttributes, 0x00040472)
  t.equal(attestationKeyTemplate().objectAttributes, 0x00050072)
  t.equal(sealedDataTemplate().objectAttributes, 0x52)
  t.equal(sealedDataTemplate({ policy: new Uint8Array(32) }).objectAttributes & TPMA_OBJECT.userWithAuth, 0)
  const w = new TpmWriter()
  w.sized(() => {})
  t.equal(Buffer.from(w.finish()).toString('hex'), '0000')

  const sig: TpmSignature = { sigAlg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256, r: hex('00' + '11'.repeat(32)), s: hex('22'.repeat(31)) }
  t.equal(Buffer.from(signatureToP1363(sig)).toString('hex'), '11'.repeat(32) + '00' + '22'.repeat(31))
  t.same(parseSignature(encodeSignature(sig)), sig)
  t.throws(() => parseSignature(hex('0018000b0020')), { code: 'ERR_TPM_MALFORMED' })

  // PolicyPCR: SHA256(0^32 ‖ u32 0x17F ‖ TPML_PCR_SELECTION ‖ SHA256(values)).
  const v = new Uint8Array(32).fill(7)
  const expected = sha256(new Uint8Array(32), hex('0000017f'), hex('00000001000b030a0000'), sha256(v, v))
  t.equal(Buffer.from(policyPcrDigest([3, 1], new Map([[1, v], [3, v]]))).toString('hex'), expected.toString('hex'))
  t.equal(Buffer.from(policyPcrDigest([1, 3], [v, v])).toString('hex'), expected.toString('hex'))
  t.throws(() => policyPcrDigest([1], new Map()), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => policyPcrDigest([24], [v]), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('parseAttest: fields, bounds and magic', async (t) => {
  const nonce = randomBytes(32)
  const build = (magic = 0xff544347, extra?: (w: TpmWriter) => void): Uint8Array => {
    const w = new TpmWriter()
    w.u32(magic).u16(TPM_ST.ATTEST_QUOTE).tpm2b(hex('000b' + 'aa'.repeat(32))).tpm2b(nonce)
    w.u64(123456n).u32(3).u32(1).u8(1).u64(0x2000000000000n)
    writePcrSelection(w, [{ hashAlg: TPM_ALG.SHA256, pcrs: [0, 1, 16] }])
    w.tpm2b(new Uint8Array(32).fill(9))
    extra?.(w)
    return w.finish()
  }
  const a = parseAttest(build())
  t.equal(a.type, TPM_ST.ATTEST_QUOTE)
  t.same(Buffer.from(a.extraData), nonce)
  t.same(a.clockInfo, { clock: 123456n, resetCount: 3, restartCount: 1, safe: true })
  t.equal(a.firmwareVersion, 0x2000000000000n)
  t.same(a.quote?.pcrSelect, [{ hashAlg: TPM_ALG.SHA256, pcrs: [0, 1, 16] }])
  t.throws(() => parseAttest(build(0xff544348)), { code: 'ERR_TPM_MALFORMED', details: { magic: 0xff544348 } })
  const whole = build()
  for (const cut of [0, 3, 5, 20, whole.length - 1]) t.throws(() => parseAttest(whole.subarray(0, cut)), { code: 'ERR_TPM_MALFORMED' }, `cut at ${cut}`)
  t.throws(() => parseAttest(build(undefined, (w) => w.u8(0))), { code: 'ERR_TPM_MALFORMED' }, 'trailing byte')
})

// ---------------------------------------------------------------------------------------------
// Transport, against fake TPMs

/** A fake TPM on a unix socket (or TCP): `reply` maps each command to raw response bytes, or null for silence. */
async function fakeTpm(
  t: Test,
  reply: (command: Buffer, n: number) => Buffer | null,
  tcp = false,
): Promise<{ endpoint: string; commands: Buffer[]; connections: () => number }> {
  const dir = await mkdtemp(join(tmpdir(), 'tl-faketpm-'))
  const commands: Buffer[] = []
  let conns = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    conns++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    let buf = Buffer.alloc(0)
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 6 && buf.length >= buf.readUInt32BE(2)) {
        const cmd = buf.subarray(0, buf.readUInt32BE(2))
        buf = buf.subarray(cmd.length)
        commands.push(cmd)
        const out = reply(cmd, commands.length)
        if (out !== null) s.write(out)
      }
    })
    s.on('error', () => {})
  })
  const path = join(dir, 'fake.sock')
  await new Promise<void>((resolve) => (tcp ? server.listen(0, '127.0.0.1', resolve) : server.listen(path, resolve)))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await rm(dir, { recursive: true, force: true })
  })
  const endpoint = tcp ? `tcp:127.0.0.1:${(server.address() as net.AddressInfo).port}` : `unix:${path}`
  return { endpoint, commands, connections: () => conns }
}

const RANDOM8 = hex('8001 00000014 00000000 0008 0102030405060708')

t.test('transport: endpoints, framing limits, queue, retries, timeouts', async (t) => {
  t.same(parseTpmEndpoint('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' })
  t.same(parseTpmEndpoint('tcp:127.0.0.1:2321'), { kind: 'tcp', host: '127.0.0.1', port: 2321 })
  t.same(parseTpmEndpoint('tcp:[::1]:2321'), { kind: 'tcp', host: '::1', port: 2321 })
  t.same(parseTpmEndpoint('/dev/tpmrm0'), { kind: 'device', path: '/dev/tpmrm0' })
  t.same(parseTpmEndpoint('device:/dev/tpm0'), { kind: 'device', path: '/dev/tpm0' })
  for (const bad of ['', 'tpm', 'unix:', 'tcp:host', 'tcp:host:0', 'tcp:host:70000', 'tcp::2321']) {
    t.throws(() => parseTpmEndpoint(bad), { code: 'ERR_INVALID_ARGUMENT' }, JSON.stringify(bad))
  }

  t.test('raw framing over unix and tcp; commands serialized on one connection', async (t) => {
    for (const tcp of [false, true]) {
      const fake = await fakeTpm(t, () => RANDOM8, tcp)
      const tr = openTpmTransport(fake.endpoint)
      const cmd = TpmClient.encodeCommand(TPM_CC.GetRandom, { params: hex('0008') })
      const all = await Promise.all(Array.from({ length: 20 }, () => tr.send(cmd)))
      for (const r of all) t.same(Buffer.from(r), RANDOM8)
      t.equal(fake.commands.length, 20)
      t.equal(fake.connections(), 1, 'one connection')
      await tr.close()
      await t.rejects(tr.send(cmd), { code: 'ERR_TPM_TRANSPORT' }, 'closed')
    }
  })

  t.test('a response over the size limit is ERR_TPM_TRANSPORT (checked on the header)', async (t) => {
    const fake = await fakeTpm(t, (_c, n) => (n === 1 ? hex('8001 00100000 00000000') : RANDOM8))
    const c = new TpmClient(openTpmTransport(fake.endpoint))
    await t.rejects(c.getRandom(8), { code: 'ERR_TPM_TRANSPORT', details: { size: 0x100000, limit: 4096 } })
    t.same(Buffer.from(await c.getRandom(8)), hex('0102030405060708'), 'reconnects after dropping the connection')
    t.equal(fake.connections(), 2)
    await c.transport.close()
  })

  t.test('a short response is ERR_TPM_MALFORMED; bytes after the response are ERR_TPM_TRANSPORT', async (t) => {
    const fake = await fakeTpm(t, (_c, n) => (n === 1 ? hex('8001 0000000e 00000000 0008 0102') : Buffer.concat([RANDOM8, hex('00')])))
    const c = new TpmClient(openTpmTransport(fake.endpoint))
    await t.rejects(c.getRandom(8), { code: 'ERR_TPM_MALFORMED' })
    await t.rejects(c.getRandom(8), { code: 'ERR_TPM_TRANSPORT' })
    await c.transport.close()
  })

  t.test('TPM_RC_RETRY / YIELDED / TESTING are retried', async (t) => {
    const rcs = ['00000922', '00000908', '0000090a']
    const fake = await fakeTpm(t, (_c, n) => (n <= 3 ? hex('8001 0000000a' + rcs[n - 1]) : RANDOM8))
    const c = new TpmClient(openTpmTransport(fake.endpoint), { retry: { baseDelayMs: 1 } })
    t.equal((await c.getRandom(8)).length, 8)
    t.equal(fake.commands.length, 4)
    await c.transport.close()
  })

  t.test('timeouts, aborts and connection failures', async (t) => {
    const fake = await fakeTpm(t, (_c, n) => (n === 1 ? null : RANDOM8))
    const tr = openTpmTransport(fake.endpoint, { timeoutMs: 100 })
    const cmd = TpmClient.encodeCommand(TPM_CC.GetRandom, { params: hex('0008') })
    const first = tr.send(cmd) // the fake never answers this one
    const second = tr.send(cmd) // queued behind it
    await t.rejects(first, { code: 'ERR_TIMEOUT' })
    t.same(Buffer.from(await second), RANDOM8, 'the queued command runs on a new connection')
    t.equal(fake.connections(), 2)
    const ac = new AbortController()
    ac.abort()
    await t.rejects(tr.send(cmd, ac.signal), { code: 'ERR_ABORTED' })
    await t.rejects(tr.send(hex('8001 0000000c 0000017b')), { code: 'ERR_INVALID_ARGUMENT' }, 'size field mismatch')
    await tr.close()
    // The device transport's error paths (no TPM device here; the happy path is untested):
    // /dev/null reads 0 bytes, /dev/zero answers a response whose header size (0) is wrong.
    for (const [dev, re] of [['/dev/null', /short response: 0 bytes/], ['/dev/zero', /announces 0 bytes/], ['device:/dev/no-such-tpm', /cannot open: ENOENT/]] as const) {
      const d = openTpmTransport(dev)
      await t.rejects(d.send(cmd), { code: 'ERR_TPM_TRANSPORT', message: re }, dev)
      await d.close()
    }
    const dead = openTpmTransport(`unix:${join(tmpdir(), 'tl-no-such-tpm.sock')}`)
    await t.rejects(dead.send(cmd), { code: 'ERR_TPM_TRANSPORT', details: { errno: 'ENOENT' } })
    await dead.close()
  })
})

// ---------------------------------------------------------------------------------------------
// Against swtpm

const noSwtpm = swtpmAvailable() ? false : 'swtpm is not installed (scripts install swtpm swtpm-tools tpm2-tools in CI)'

async function leftTransients(c: TpmClient): Promise<number[]> {
  return c.getHandles(TPM_HT.TRANSIENT)
}

t.test('TPM commands against swtpm', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const open = async (t: Test): Promise<TpmClient> => {
    const c = await TpmClient.open(swtpm.endpoint)
    t.teardown(() => c.close())
    return c
  }

  t.test('GetRandom', async (t) => {
    const c = await open(t)
    const a = await c.getRandom(32)
    const b = await c.getRandom(200) // more than one TPM2_GetRandom
    t.equal(a.length, 32)
    t.equal(b.length, 200)
    t.notSame(Buffer.from(a), Buffer.alloc(32))
    t.notSame(Buffer.from(b.subarray(0, 32)), Buffer.from(a))
  })

  t.test('PCR_Read of all 24 SHA-256 PCRs pages by 8; PCR_Extend is SHA-256(old ‖ digest)', async (t) => {
    const counting = new CountingTransport(openTpmTransport(swtpm.endpoint))
    const c = await TpmClient.open(counting)
    t.teardown(() => c.close())
    const all = Array.from({ length: 24 }, (_, i) => i)
    const before = counting.counts.get(TPM_CC.PCR_Read) ?? 0
    const values = await c.pcrRead(all)
    t.equal(values.size, 24)
    t.same([...values.keys()], all)
    for (const v of values.values()) t.equal(v.length, 32)
    t.ok((counting.counts.get(TPM_CC.PCR_Read) ?? 0) - before >= 3, 'at least 3 TPM2_PCR_Read calls (8 digests each)')
    t.same(Buffer.from(values.get(0)!), Buffer.alloc(32), 'PCR 0 is zero after startup')

    const digest = sha256(Buffer.from('measurement'))
    const old = (await c.pcrRead([16])).get(16)!
    await c.pcrExtend(16, digest)
    const now = (await c.pcrRead([16])).get(16)!
    t.same(Buffer.from(now), sha256(old, digest))
    await t.rejects(c.pcrExtend(16, new Uint8Array(31)), { code: 'ERR_INVALID_ARGUMENT' })
  })

  t.test('a P-256 signing key: Create, Load, Sign; verifies with node:crypto', async (t) => {
    const c = await open(t)
    await c.withPrimary(async (srk) => {
      t.same(Buffer.from(srk.name), Buffer.from(objectName(publicArea(srk.public))), 'SRK Name = nameAlg ‖ H(public)')
      const blobs = await c.create(srk.handle, signingKeyTemplate())
      const pub = parsePublic(blobs.public, true)
      t.equal(pub.type, 'ecc')
      t.equal(pub.objectAttributes, 0x00040072)
      const point = eccPublicPoint(blobs.public)
      t.equal(point.length, 65)
      t.equal(point[0], 0x04)
      const key = eccPublicKeyObject(blobs.public)
      t.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1')
      const data = Buffer.from('sign me')
      await c.withLoaded(srk.handle, blobs, async (obj) => {
        const rp = await c.readPublic(obj.handle)
        t.same(Buffer.from(rp.name), Buffer.from(obj.name))
        t.same(Buffer.from(rp.public), Buffer.from(blobs.public))
        const sig = await c.sign(obj.handle, sha256(data))
        t.equal(sig.sigAlg, TPM_ALG.ECDSA)
        t.equal(sig.hashAlg, TPM_ALG.SHA256)
        t.ok(verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, p1363(sig)), 'signature verifies')
        t.notOk(verify('sha256', Buffer.from('other'), { key, dsaEncoding: 'ieee-p1363' }, p1363(sig)))
      })
    })
    t.same(await leftTransients(c), [])
  })

  t.test('Quote over PCRs 0-7 and 16 with a 32-byte nonce', async (t) => {
    const c = await open(t)
    await c.pcrExtend(16, sha256(Buffer.from('quote me')))
    const pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 16]
    const nonce = randomBytes(32)
    await c.withPrimary(async (srk) => {
      const akBlobs = await c.create(srk.handle, attestationKeyTemplate())
      const akKey = eccPublicKeyObject(akBlobs.public)
      await c.withLoaded(srk.handle, akBlobs, async (ak) => {
        const { attest, signature } = await c.quote(ak.handle, nonce, pcrs)
        const a = parseAttest(attest)
        t.equal(a.magic, 0xff544347)
        t.equal(a.type, TPM_ST.ATTEST_QUOTE)
        t.same(Buffer.from(a.extraData), nonce)
        t.same(Buffer.from(a.qualifiedSigner.subarray(0, 2)), hex('000b'), 'qualifiedSigner is a SHA-256 Name')
        t.equal(typeof a.clockInfo.clock, 'bigint')
        t.ok(a.clockInfo.clock > 0n, `clock ${a.clockInfo.clock}`)
        t.equal(typeof a.clockInfo.safe, 'boolean')
        t.equal(typeof a.clockInfo.resetCount, 'number')
        t.same(a.quote?.pcrSelect, [{ hashAlg: TPM_ALG.SHA256, pcrs }])
        t.ok(verify('sha256', attest, { key: akKey, dsaEncoding: 'ieee-p1363' }, p1363(signature)), 'quote signature verifies')
        const values = await c.pcrRead(pcrs)
        t.same(Buffer.from(a.quote!.pcrDigest), sha256(...pcrs.map((p) => values.get(p)!)), 'pcrDigest = SHA-256(PCR values)')
        // A restricted key does not sign external digests.
        await t.rejects(c.sign(ak.handle, sha256(Buffer.from('x'))), { code: 'ERR_TPM' })
      })
    })
    t.same(await leftTransients(c), [])
  })

  t.test('Certify: an attestation key certifies the signing key', async (t) => {
    const c = await open(t)
    await c.withPrimary(async (srk) => {
      const keyBlobs = await c.create(srk.handle, signingKeyTemplate())
      const akBlobs = await c.create(srk.handle, attestationKeyTemplate())
      const nonce = randomBytes(32)
      await c.withLoaded(srk.handle, keyBlobs, async (key) =>
        c.withLoaded(srk.handle, akBlobs, async (ak) => {
          const { attest, signature } = await c.certify(key.handle, ak.handle, nonce)
          const a = parseAttest(attest)
          t.equal(a.type, TPM_ST.ATTEST_CERTIFY)
          t.same(Buffer.from(a.extraData), nonce)
          t.same(Buffer.from(a.certify!.name), Buffer.from(key.name), 'certified Name = the loaded key Name')
          t.same(Buffer.from(a.certify!.name), Buffer.from(objectName(publicArea(keyBlobs.public))), '= nameAlg ‖ H(TPMT_PUBLIC)')
          t.ok(verify('sha256', attest, { key: eccPublicKeyObject(akBlobs.public), dsaEncoding: 'ieee-p1363' }, p1363(signature)))
        }),
      )
    })
    t.same(await leftTransients(c), [])
  })

  t.test('seal/unseal under a PCR policy; TPM_RC_POLICY_FAIL after the PCR changes', async (t) => {
    const c = await open(t)
    const secret = randomBytes(32)
    const pcrs = [7, 23]
    await c.withPrimary(async (srk) => {
      // The offline digest equals the TPM's (trial session).
      const offline = policyPcrDigest(pcrs, await c.pcrRead(pcrs))
      const trial = await c.startAuthSession('trial')
      const onTpm = await c.withHandle(trial.handle, async (s) => {
        await c.policyPCR(s, pcrs)
        return c.policyGetDigest(s)
      })
      t.same(Buffer.from(onTpm), Buffer.from(offline), 'offline PolicyPCR digest = PolicyGetDigest')

      const sealed = await c.seal(srk.handle, secret, { pcrs })
      t.same(Buffer.from(sealed.policy), Buffer.from(offline))
      t.same(Buffer.from(await c.unsealBlobs(srk.handle, sealed, pcrs)), secret, 'unseals')
      // Without the policy session (password), the object refuses: no userWithAuth.
      const noPolicy = await c.unsealBlobs(srk.handle, sealed).catch((e: unknown) => e)
      expectTpmError(t, noPolicy, 'TPM_RC_AUTH_UNAVAILABLE')

      await c.pcrExtend(23, sha256(Buffer.from('something else ran')))
      const err = await c.unsealBlobs(srk.handle, sealed, pcrs).catch((e: unknown) => e)
      const e = expectTpmError(t, err, 'TPM_RC_POLICY_FAIL')
      t.equal(e.details?.rc, 0x99d)
      t.equal(e.details?.kind, 'session')
      t.equal(e.details?.index, 1)
      t.equal(e.details?.command, 'TPM2_Unseal')

      // A password-sealed object (no PCRs) unseals with its empty password.
      const plain = await c.seal(srk.handle, Buffer.from('hello'))
      t.equal(Buffer.from(await c.unsealBlobs(srk.handle, plain)).toString(), 'hello')
      await t.rejects(c.seal(srk.handle, new Uint8Array(129)), { code: 'ERR_INVALID_ARGUMENT' })
    })
    t.same(await leftTransients(c), [], 'object and session flushed after the failure too')
    t.same(await c.getHandles(TPM_HT.HMAC_SESSION), [], 'no session left')
  })

  t.test('ten keys in turn never hit TPM_RC_OBJECT_MEMORY; no handles left', async (t) => {
    const c = await open(t)
    await c.withPrimary(async (srk) => {
      const keys: KeyBlobs[] = []
      for (let i = 0; i < 10; i++) keys.push(await c.create(srk.handle, signingKeyTemplate({ noDA: true })))
      for (const [i, blobs] of keys.entries()) {
        const data = Buffer.from(`message ${i}`)
        const sig = await c.withLoaded(srk.handle, blobs, (k) => c.sign(k.handle, sha256(data)))
        t.ok(verify('sha256', data, { key: eccPublicKeyObject(blobs.public), dsaEncoding: 'ieee-p1363' }, p1363(sig)), `key ${i}`)
      }
      t.same(await leftTransients(c), [srk.handle], 'only the SRK is loaded')

      // Without flushing, swtpm's 3 object slots run out, and the error names the code.
      const loaded: number[] = []
      try {
        const err = await (async () => {
          for (const blobs of keys) loaded.push((await c.load(srk.handle, blobs)).handle)
        })().catch((e: unknown) => e)
        const e = expectTpmError(t, err, 'TPM_RC_OBJECT_MEMORY')
        t.equal(e.details?.rc, 0x902)
      } finally {
        for (const h of loaded) await c.flushContext(h)
      }
    })
    t.same(await leftTransients(c), [])
  })

  t.test('open() flushes transient objects and sessions left by a crashed run', async (t) => {
    const a = new TpmClient(openTpmTransport(swtpm.endpoint), { shutdownOnClose: false })
    await a.createPrimary(srkTemplate())
    const session = await a.startAuthSession('policy')
    t.equal((await a.getHandles(TPM_HT.TRANSIENT)).length, 1)
    t.same(await a.getHandles(TPM_HT.HMAC_SESSION), [session.handle], 'loaded sessions (type 0x02) include policy sessions (0x03…)')
    await a.transport.close() // "crash": nothing flushed
    const b = await TpmClient.open(swtpm.endpoint)
    t.teardown(() => b.close())
    t.same(await b.getHandles(TPM_HT.TRANSIENT), [])
    t.same(await b.getHandles(TPM_HT.HMAC_SESSION), [])
    await t.rejects(b.flushContext(0x80ffffff), { code: 'ERR_TPM' }, 'flushing an unknown handle is a typed error')
  })

  t.test('EvictControl persists and removes a key', async (t) => {
    const c = await open(t)
    const persistent = 0x81000010
    await c.withPrimary(async (srk) => {
      const blobs = await c.create(srk.handle, signingKeyTemplate({ noDA: true }))
      await c.withLoaded(srk.handle, blobs, (k) => c.evictControl(k.handle, persistent))
      t.ok((await c.getHandles(TPM_HT.PERSISTENT)).includes(persistent))
      const data = Buffer.from('persistent')
      const sig = await c.sign(persistent, sha256(data))
      t.ok(verify('sha256', data, { key: eccPublicKeyObject(blobs.public), dsaEncoding: 'ieee-p1363' }, p1363(sig)))
      await c.evictControl(persistent, persistent)
      t.notOk((await c.getHandles(TPM_HT.PERSISTENT)).includes(persistent))
    })
  })
})

t.test('keys re-load from their blobs after a swtpm restart', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  let c = await TpmClient.open(swtpm.endpoint)
  const srk1 = await c.createPrimary(srkTemplate())
  const blobs = await c.create(srk1.handle, signingKeyTemplate())
  const key = eccPublicKeyObject(blobs.public)
  await c.flushContext(srk1.handle)
  await c.pcrExtend(16, sha256(Buffer.from('before restart')))
  const persisted: KeyBlobs = { public: Buffer.from(blobs.public), private: Buffer.from(blobs.private) }
  await c.close() // TPM2_Shutdown(CLEAR): no dictionary-attack count at the next start

  const pid = swtpm.pid
  await swtpm.restart()
  t.not(swtpm.pid, pid, 'a new swtpm process on the same state')
  c = await TpmClient.open(swtpm.endpoint)
  t.teardown(() => c.close())
  t.same(Buffer.from((await c.pcrRead([16])).get(16)!), Buffer.alloc(32), 'PCRs reset on restart')
  const props = await c.getProperties(TPM_PT.LOCKOUT_COUNTER, 1)
  t.equal(props.get(TPM_PT.LOCKOUT_COUNTER), 0, 'no dictionary-attack count after an orderly (Shutdown) stop')
  const data = Buffer.from('after restart')
  const sig = await c.withPrimary(async (srk) => {
    t.same(Buffer.from(srk.name), Buffer.from(srk1.name), 'the SRK is re-created identically (deterministic primary)')
    return c.withLoaded(srk.handle, persisted, (k) => c.sign(k.handle, sha256(data)))
  })
  t.ok(verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, p1363(sig)), 'signature verifies with the key exported before the restart')
  t.same(await c.getHandles(TPM_HT.TRANSIENT), [])
})

t.test('open() after a power cycle sends TPM2_Startup(CLEAR); the TCP endpoint works too', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t, { tcp: true })
  t.match(swtpm.endpoint, /^tcp:127\.0\.0\.1:\d+$/)
  let c = await TpmClient.open(swtpm.endpoint)
  await c.pcrExtend(16, sha256(Buffer.from('before the power cycle')))
  await c.close()
  t.equal(await swtpm.control(2 /* CMD_INIT */, new Uint8Array(4)), 0, 'control CMD_INIT')
  const counting = new CountingTransport(openTpmTransport(swtpm.endpoint))
  c = await TpmClient.open(counting)
  t.teardown(() => c.close())
  t.equal(counting.counts.get(TPM_CC.Startup), 1, 'one TPM2_Startup after TPM_RC_INITIALIZE')
  t.same(Buffer.from((await c.pcrRead([16])).get(16)!), Buffer.alloc(32), 'PCRs reset by the power cycle')
  const data = Buffer.from('over tcp')
  await c.withPrimary(async (srk) => {
    const blobs = await c.create(srk.handle, signingKeyTemplate({ noDA: true }))
    const sig = await c.withLoaded(srk.handle, blobs, (k) => c.sign(k.handle, sha256(data)))
    t.ok(verify('sha256', data, { key: eccPublicKeyObject(blobs.public), dsaEncoding: 'ieee-p1363' }, p1363(sig)))
  })
})
