// AK↔EK credential activation: KDFa/KDFe known answers, MakeCredential in node:crypto
// (src/attest/credential.ts) against TPM2_ActivateCredential in swtpm (TpmVault.activateCredential
// with the TCG ECC P-256 EK), AK enrolment (src/attest/enrol.ts), and an optional cross-check with
// tpm2-tools' tpm2_makecredential (skipped when absent).
import t from 'tap'
import { createCipheriv, createECDH, createHash, createHmac } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import { kdfa, kdfe, makeCredential } from '../src/attest/credential.ts'
import { checkAkPublic, enrolAk } from '../src/attest/enrol.ts'
import { ReferenceValues, Verifier } from '../src/attest/verifier.ts'
import { MeasurementLog, SIM_PLATFORM_BOOT, Tpm2Attester } from '../src/attest/tpm2.ts'
import { VerifierKey } from '../src/attest/token.ts'
import { spkiKeyId } from '../src/attest/keys.ts'
import { Node, silentLogger, route } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { SecureChannels, SoftwareIdentity, resolveRoute } from '../src/channel/index.ts'
import { ENROL_PENDING_MS, RemoteVerifier, VerifierService, enrolWithVerifier, verifierRequest } from '../src/services/verifier.ts'
import { TpmVault } from '../src/vault/index.ts'
import {
  EK_POLICY,
  TPM_ALG,
  TPM_CC,
  TPM_RH,
  TPMA_OBJECT,
  TpmWriter,
  eccPublicPoint,
  ekTemplate,
  encodePublic,
  parsePublic,
  writePublic,
  type EccPublic,
} from '../src/vault/tpm/index.ts'
import { startSwtpm, swtpmAvailable } from './helpers/swtpm.ts'

const noSwtpm = swtpmAvailable() ? false : 'swtpm is not installed (scripts install swtpm swtpm-tools tpm2-tools in CI)'
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const be32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

t.test('KDFa: the libtpms/reference-implementation self-test vectors (KdfTestData.h)', async (t) => {
  // key, label "KDFSELFTESTLABEL" (with its NUL), contextU, contextV, 160 bits
  const key = hex('271fa08bbdc5060ec3dfa928ff9b73123a12da0c')
  const u = hex('ce244f395dca7391')
  const v = hex('da504031ddf12e83')
  t.equal(toHex(kdfa(TPM_ALG.SHA256, key, 'KDFSELFTESTLABEL', u, v, 160)), 'bb0259e1c8ba607e6a2cd704b69a902e9ade84c4', 'SHA-256')
  t.equal(toHex(kdfa(TPM_ALG.SHA1, key, 'KDFSELFTESTLABEL', u, v, 160)), '55b5a7184aa07423c47dae766c26a2377d7cf851', 'SHA-1')
  t.equal(toHex(kdfa(TPM_ALG.SHA384, key, 'KDFSELFTESTLABEL', u, v, 160)), '1dce70c9113eb2dba47bd9cfc72bf46f45b09312', 'SHA-384')
  t.equal(toHex(kdfa(TPM_ALG.SHA512, key, 'KDFSELFTESTLABEL', u, v, 160)), '8be2c1b85b78569b9fa759f5857c56d684810fd3', 'SHA-512')
  // a label given with its NUL already is the same label
  t.same(kdfa(TPM_ALG.SHA256, key, new Uint8Array(Buffer.from('KDFSELFTESTLABEL\0')), u, v, 160), kdfa(TPM_ALG.SHA256, key, 'KDFSELFTESTLABEL', u, v, 160))
})

t.test('KDFa and KDFe against a step-by-step computation with node:crypto', async (t) => {
  const seed = hex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f')
  const name = hex('000b' + 'aa'.repeat(32))
  // KDFa(SHA-256, seed, "STORAGE", name, ∅, 128): one block, HMAC(seed, 00000001 ‖ "STORAGE\0" ‖ name ‖ 00000080), first 16 bytes
  const block = createHmac('sha256', seed)
    .update(Buffer.concat([be32(1), Buffer.from('STORAGE\0', 'latin1'), name, be32(128)]))
    .digest()
  t.equal(toHex(kdfa(TPM_ALG.SHA256, seed, 'STORAGE', name, new Uint8Array(0), 128)), block.subarray(0, 16).toString('hex'), 'KDFa 128 bits')
  // KDFa(SHA-256, seed, "INTEGRITY", ∅, ∅, 512): two blocks (counter 1 and 2), bits field 0x200
  const b1 = createHmac('sha256', seed).update(Buffer.concat([be32(1), Buffer.from('INTEGRITY\0', 'latin1'), be32(512)])).digest()
  const b2 = createHmac('sha256', seed).update(Buffer.concat([be32(2), Buffer.from('INTEGRITY\0', 'latin1'), be32(512)])).digest()
  t.equal(toHex(kdfa(TPM_ALG.SHA256, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), 512)), Buffer.concat([b1, b2]).toString('hex'), 'KDFa two blocks')
  // 12 bits: the first two bytes with the top 4 bits cleared
  const b12 = createHmac('sha256', seed).update(Buffer.concat([be32(1), Buffer.from('X\0', 'latin1'), be32(12)])).digest()
  t.equal(toHex(kdfa(TPM_ALG.SHA256, seed, 'X', new Uint8Array(0), new Uint8Array(0), 12)), ((b12[0]! & 0x0f) << 8 | b12[1]!).toString(16).padStart(4, '0'), 'KDFa 12 bits')

  // KDFe(SHA-256, Z, "IDENTITY", U, V, 256) = SHA-256(00000001 ‖ Z ‖ "IDENTITY\0" ‖ U ‖ V)
  const z = hex('11'.repeat(32))
  const pu = hex('22'.repeat(32))
  const pv = hex('33'.repeat(32))
  const e1 = createHash('sha256').update(Buffer.concat([be32(1), z, Buffer.from('IDENTITY\0', 'latin1'), pu, pv])).digest()
  t.equal(toHex(kdfe(TPM_ALG.SHA256, z, 'IDENTITY', pu, pv, 256)), e1.toString('hex'), 'KDFe 256 bits')
  const e2 = createHash('sha256').update(Buffer.concat([be32(2), z, Buffer.from('IDENTITY\0', 'latin1'), pu, pv])).digest()
  t.equal(toHex(kdfe(TPM_ALG.SHA256, z, 'IDENTITY', pu, pv, 384)), Buffer.concat([e1, e2.subarray(0, 16)]).toString('hex'), 'KDFe 384 bits')
  t.throws(() => kdfa(0x1234, seed, 'X', new Uint8Array(0), new Uint8Array(0), 8), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => kdfe(TPM_ALG.SHA256, z, 'X', pu, pv, 0), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('the TCG EK template and its PolicySecret(TPM_RH_ENDORSEMENT) policy', async (t) => {
  // PolicySecret: H(H(0^32 ‖ CC ‖ Name(TPM_RH_ENDORSEMENT)) ‖ policyRef (empty)); a permanent handle's Name is the handle
  const step1 = createHash('sha256').update(Buffer.concat([Buffer.alloc(32), be32(TPM_CC.PolicySecret), be32(TPM_RH.ENDORSEMENT)])).digest()
  const policy = createHash('sha256').update(step1).digest()
  t.equal(toHex(EK_POLICY), policy.toString('hex'))
  t.equal(toHex(EK_POLICY), '837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa')
  const ek = ekTemplate()
  t.equal(ek.objectAttributes, 0x000300b2, 'fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt')
  const bytes = toHex(encodePublic(ek))
  t.equal(
    bytes,
    '0023000b000300b20020' + toHex(EK_POLICY) + '0006008000430010000300100020' + '00'.repeat(32) + '0020' + '00'.repeat(32),
    'TPMT_PUBLIC of template L-2',
  )
})

/** The TPM side of ActivateCredential, in node:crypto, with the EK private key (to check the layout offline). */
function softActivate(ekPriv: ReturnType<typeof createECDH>, akName: Uint8Array, blob: Uint8Array, encSecret: Uint8Array): Uint8Array {
  const b = Buffer.from(blob)
  const s = Buffer.from(encSecret)
  if (b.readUInt16BE(0) !== b.length - 2 || s.readUInt16BE(0) !== s.length - 2) throw new Error('not TPM2B')
  const xl = s.readUInt16BE(2)
  const qx = s.subarray(4, 4 + xl)
  const qy = s.subarray(6 + xl, 6 + xl + s.readUInt16BE(4 + xl))
  const z = ekPriv.computeSecret(Buffer.concat([Buffer.from([4]), qx, qy]))
  const ekX = ekPriv.getPublicKey().subarray(1, 33)
  const seed = createHash('sha256').update(Buffer.concat([be32(1), z, Buffer.from('IDENTITY\0'), qx, ekX])).digest()
  const hmacKey = createHmac('sha256', seed).update(Buffer.concat([be32(1), Buffer.from('INTEGRITY\0'), be32(256)])).digest()
  const symKey = createHmac('sha256', seed).update(Buffer.concat([be32(1), Buffer.from('STORAGE\0'), akName, be32(128)])).digest().subarray(0, 16)
  const hl = b.readUInt16BE(2)
  const outer = b.subarray(4, 4 + hl)
  const enc = b.subarray(4 + hl)
  const expect = createHmac('sha256', hmacKey).update(Buffer.concat([enc, akName])).digest()
  if (!expect.equals(outer)) throw new Error('integrity')
  const d = createDecipher(symKey, enc)
  return new Uint8Array(d.subarray(2, 2 + d.readUInt16BE(0)))
}

function createDecipher(key: Buffer, data: Buffer): Buffer {
  // AES-128-CFB, IV 0, written as CFB over AES-128-ECB block encryptions
  let iv: Buffer = Buffer.alloc(16)
  const out = Buffer.alloc(data.length)
  for (let off = 0; off < data.length; off += 16) {
    const ecb = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false)
    const ks = ecb.update(iv)
    const c = data.subarray(off, off + 16)
    for (let i = 0; i < c.length; i++) out[off + i] = c[i]! ^ ks[i]!
    iv = Buffer.from(c.length === 16 ? c : Buffer.concat([c, Buffer.alloc(16 - c.length)]))
  }
  return out
}

t.test('makeCredential: layout, checked by a hand-written TPM side (software EK)', async (t) => {
  const ek = createECDH('prime256v1')
  ek.generateKeys()
  const point = new Uint8Array(ek.getPublicKey())
  const name = hex('000b' + '5a'.repeat(32))
  const secret = hex('c0ffee'.repeat(10) + 'ab')
  const c = makeCredential(point, name, secret)
  t.same(softActivate(ek, name, c.credentialBlob, c.encryptedSecret), secret, 'the secret comes back')
  t.throws(() => softActivate(ek, hex('000b' + '5b'.repeat(32)), c.credentialBlob, c.encryptedSecret), /integrity/, 'another Name fails the HMAC')
  t.equal(c.credentialBlob.length, 2 + 2 + 32 + 2 + secret.length)
  t.equal(c.encryptedSecret.length, 2 + 2 + 32 + 2 + 32)
  // deterministic with a fixed ephemeral key
  const eph = hex('01'.repeat(32))
  t.same(makeCredential(point, name, secret, { ephemeralPrivateKey: eph }), makeCredential(point, name, secret, { ephemeralPrivateKey: eph }))
  t.throws(() => makeCredential(point, name, new Uint8Array(33)), { code: 'ERR_INVALID_ARGUMENT' }, 'secret over 32 bytes')
  t.throws(() => makeCredential(point, name, new Uint8Array(0)), { code: 'ERR_INVALID_ARGUMENT' }, 'empty secret')
  t.throws(() => makeCredential(point, hex('000b01'), secret), { code: 'ERR_INVALID_ARGUMENT' }, 'bad Name')
  const offCurve = Uint8Array.from(point)
  offCurve[64]! ^= 1
  t.throws(() => makeCredential(offCurve, name, secret), { code: 'ERR_INVALID_ARGUMENT' }, 'point off the curve')
  // an EK public area that is not a restricted decryption key is refused
  const notEk: EccPublic = { ...ekTemplate(), objectAttributes: TPMA_OBJECT.fixedTPM | TPMA_OBJECT.sign, x: point.subarray(1, 33), y: point.subarray(33) }
  const w = new TpmWriter(200).sized((s) => writePublic(s, notEk))
  t.throws(() => makeCredential(w.finish(), name, secret), { code: 'ERR_INVALID_ARGUMENT' })
})

t.test('credential activation against swtpm', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: t.testdir() })
  t.teardown(() => vault.close())
  const ak = await vault.generateAttestationKey()
  const ak2 = await vault.generateAttestationKey()
  const signer = await vault.generateSigningKey('p256')
  const akInfo = await vault.tpmPublic(ak)
  const ekPub = await vault.ekPublic()

  await t.test('the EK is the TCG ECC P-256 EK, deterministic', async (t) => {
    const p = parsePublic(ekPub, true)
    const tpl = ekTemplate()
    t.equal(p.type, 'ecc')
    t.equal(p.objectAttributes, tpl.objectAttributes)
    t.same(p.authPolicy, EK_POLICY)
    t.same(await vault.ekPublic(), ekPub, 'the same EK again')
  })

  await t.test('makeCredential + ActivateCredential returns the secret (TPM2B_PUBLIC and point forms)', async (t) => {
    const secret = hex('0123456789abcdef'.repeat(4))
    const c = makeCredential(ekPub, akInfo.name, secret)
    t.same(await vault.activateCredential(ak, c.credentialBlob, c.encryptedSecret), secret)
    const short = hex('2a')
    const c2 = makeCredential(eccPublicPoint(ekPub), akInfo.name, short)
    t.same(await vault.activateCredential(ak, c2.credentialBlob, c2.encryptedSecret), short)
    // with the key slots full of kept keys (SRK + ak2 + signer), activation still fits
    await vault.sign(signer, new Uint8Array(8))
    await vault.quote(ak2, new Uint8Array(8), [0])
    t.same(await vault.activateCredential(ak, c.credentialBlob, c.encryptedSecret), secret, 'after other keys were loaded')
  })

  await t.test('a credential for another AK Name fails with ERR_TPM', async (t) => {
    const other = await vault.tpmPublic(ak2)
    const c = makeCredential(ekPub, other.name, new Uint8Array(32).fill(7))
    const err = await vault.activateCredential(ak, c.credentialBlob, c.encryptedSecret).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isThroughlineError(err, 'ERR_TPM'), `ERR_TPM (got ${String(err)})`)
    t.equal((err as ThroughlineError).details?.['name'], 'TPM_RC_INTEGRITY')
    t.equal((err as ThroughlineError).details?.['command'], 'TPM2_ActivateCredential')
    // the right AK for that credential works
    t.same(await vault.activateCredential(ak2, c.credentialBlob, c.encryptedSecret), new Uint8Array(32).fill(7))
  })

  await t.test('a credential made to another EK fails with ERR_TPM', async (t) => {
    const otherEk = createECDH('prime256v1')
    otherEk.generateKeys()
    const c = makeCredential(new Uint8Array(otherEk.getPublicKey()), akInfo.name, new Uint8Array(32).fill(9))
    const err = await vault.activateCredential(ak, c.credentialBlob, c.encryptedSecret).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isThroughlineError(err, 'ERR_TPM'), `ERR_TPM (got ${String(err)})`)
    t.equal((err as ThroughlineError).details?.['name'], 'TPM_RC_INTEGRITY')
    // a tampered blob too
    const good = makeCredential(ekPub, akInfo.name, new Uint8Array(32).fill(1))
    const bad = Uint8Array.from(good.credentialBlob)
    bad[bad.length - 1]! ^= 0x80
    await t.rejects(vault.activateCredential(ak, bad, good.encryptedSecret), { code: 'ERR_TPM' })
    await t.rejects(vault.activateCredential(ak, new Uint8Array([0, 5, 1]), good.encryptedSecret), { code: 'ERR_INVALID_ARGUMENT' })
    await t.rejects(vault.activateCredential(signer, good.credentialBlob, good.encryptedSecret), { code: 'ERR_VAULT_KEY_NOT_FOUND' }, 'not an AK')
  })

  await t.test('handles are flushed after successes and failures', async (t) => {
    const h = await vault.tpmHandles()
    t.same(h.sessions, [], 'no session left')
    t.ok(h.objects.length <= 3, `the SRK and kept keys only (${h.objects.length})`)
  })

  await t.test('enrolAk accepts the genuine AK; the verifier then trusts its SPKI', async (t) => {
    const activate = (blob: Uint8Array, sec: Uint8Array): Promise<Uint8Array> => vault.activateCredential(ak, blob, sec)
    const enrolled = await enrolAk({ ekPublic: ekPub, akPublic: akInfo.public, activate })
    const attester = await Tpm2Attester.create({ vault, akHandle: ak })
    t.same(enrolled.akSpki, await attester.akPublicSpki(), 'the SPKI the tpm2 attester puts in its evidence')
    t.same(enrolled.akName, akInfo.name)
    t.same(enrolled.ekPoint, eccPublicPoint(ekPub))
    const verifier = new Verifier({ id: 'v', trustAnchors: {} })
    verifier.enrolAk(enrolled.akSpki)
    verifier.enrolAk(enrolled.akSpki)
    t.throws(() => verifier.enrolAk(new Uint8Array(0)), { code: 'ERR_INVALID_ARGUMENT' })
    // TOFU: the recorded EK is required the next time
    t.ok(await enrolAk({ ekPublic: ekPub, akPublic: akInfo.public, activate, expectedEk: enrolled.ekPoint }))
    const otherEk = createECDH('prime256v1')
    otherEk.generateKeys()
    await t.rejects(enrolAk({ ekPublic: ekPub, akPublic: akInfo.public, activate, expectedEk: new Uint8Array(otherEk.getPublicKey()) }), {
      code: 'ERR_ATTEST_ENROL_FAILED',
      details: { reason: 'ek_mismatch' },
    })
  })

  await t.test('enrolAk refuses keys that are not AKs, AKs of another TPM, and wrong answers', async (t) => {
    const activate = (blob: Uint8Array, sec: Uint8Array): Promise<Uint8Array> => vault.activateCredential(ak, blob, sec)
    // a non-restricted signing key (a real TPM key)
    const signerPub = (await vault.tpmPublic(signer)).public
    await t.rejects(enrolAk({ ekPublic: ekPub, akPublic: signerPub, activate: (b, s) => vault.activateCredential(ak, b, s) }), {
      code: 'ERR_ATTEST_ENROL_FAILED',
      details: { reason: 'ak_attributes' },
    })
    // the AK's public area with one attribute cleared (fixedTPM, fixedParent, restricted, sign) or decrypt added
    const base = parsePublic(akInfo.public, true) as EccPublic
    const variants: Array<[string, number]> = [
      ['fixedTPM', base.objectAttributes & ~TPMA_OBJECT.fixedTPM],
      ['fixedParent', base.objectAttributes & ~TPMA_OBJECT.fixedParent],
      ['restricted', base.objectAttributes & ~TPMA_OBJECT.restricted],
      ['sign', base.objectAttributes & ~TPMA_OBJECT.sign],
      ['decrypt', base.objectAttributes | TPMA_OBJECT.decrypt],
    ]
    for (const [what, attrs] of variants) {
      const pub = new TpmWriter(200).sized((w) => writePublic(w, { ...base, objectAttributes: attrs })).finish()
      t.throws(() => checkAkPublic(pub), { code: 'ERR_ATTEST_ENROL_FAILED', details: { reason: 'ak_attributes' } }, what)
      await t.rejects(enrolAk({ ekPublic: ekPub, akPublic: pub, activate }), { code: 'ERR_ATTEST_ENROL_FAILED', details: { reason: 'ak_attributes' } }, what)
    }
    t.throws(() => checkAkPublic(new Uint8Array([0, 1, 2])), { code: 'ERR_ATTEST_ENROL_FAILED', details: { reason: 'ak_public' } })
    // a claimed AK that is not the one in the TPM (ak2's public, activated by ak): the TPM refuses
    const ak2Pub = (await vault.tpmPublic(ak2)).public
    const err = await enrolAk({ ekPublic: ekPub, akPublic: ak2Pub, activate }).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isThroughlineError(err, 'ERR_ATTEST_ENROL_FAILED'))
    t.equal((err as ThroughlineError).details?.['reason'], 'activation_failed')
    t.ok(isThroughlineError((err as Error).cause, 'ERR_TPM'), 'the TPM error is the cause')
    // a device that answers something else
    await t.rejects(enrolAk({ ekPublic: ekPub, akPublic: akInfo.public, activate: async () => new Uint8Array(32) }), {
      code: 'ERR_ATTEST_ENROL_FAILED',
      details: { reason: 'secret_mismatch' },
    })
    await t.rejects(enrolAk({ ekPublic: new Uint8Array([0, 1, 0]), akPublic: akInfo.public, activate }), {
      code: 'ERR_ATTEST_ENROL_FAILED',
      details: { reason: 'ek_public' },
    })
    const h = await vault.tpmHandles()
    t.same(h.sessions, [], 'no session left')
  })

  const tools = spawnSync('sh', ['-c', 'command -v tpm2_makecredential'], { stdio: 'ignore' }).status === 0
  await t.test('cross-check: tpm2-tools tpm2_makecredential (offline, -T none) activates in our vault', { skip: tools ? false : 'tpm2_makecredential is not installed' }, async (t) => {
    const dir = t.testdir()
    const secret = hex('5ec2e7'.repeat(10) + '0102')
    writeFileSync(join(dir, 'ek.pub'), ekPub)
    writeFileSync(join(dir, 'secret.bin'), secret)
    const r = spawnSync(
      'tpm2_makecredential',
      ['-T', 'none', '-u', join(dir, 'ek.pub'), '-s', join(dir, 'secret.bin'), '-n', toHex(akInfo.name), '-o', join(dir, 'cred.out')],
      { encoding: 'utf8' },
    )
    t.equal(r.status, 0, `tpm2_makecredential ran: ${r.stderr}`)
    if (r.status !== 0) return
    // file: u32 magic 0xBADCC0DE ‖ u32 version 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET
    const f = readFileSync(join(dir, 'cred.out'))
    t.equal(f.readUInt32BE(0), 0xbadcc0de)
    const idLen = f.readUInt16BE(8)
    const blob = new Uint8Array(f.subarray(8, 10 + idLen))
    const encSecret = new Uint8Array(f.subarray(10 + idLen))
    t.equal(encSecret.length, new DataView(encSecret.buffer, encSecret.byteOffset).getUint16(0) + 2)
    t.same(await vault.activateCredential(ak, blob, encSecret), secret, "tpm2-tools' credential gives the secret")
    t.equal(blob.length, makeCredential(ekPub, akInfo.name, secret).credentialBlob.length, 'same blob size as ours')
  })
})

t.test('EK certificate from NV 0x01C0000A: absent on a bare swtpm, read back when provisioned', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const tools = spawnSync('sh', ['-c', 'command -v tpm2_nvdefine && command -v tpm2_nvwrite'], { stdio: 'ignore' }).status === 0
  const dir = t.testdir()
  let vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
  t.equal(await vault.ekCertificate(), undefined, 'no EK certificate (swtpm without swtpm_setup)')
  await vault.close()
  await t.test('provisioned with tpm2-tools', { skip: tools ? false : 'tpm2_nvdefine/tpm2_nvwrite are not installed' }, async (t) => {
    // provision a 1500-byte "certificate" (read in several NV_Read chunks) with tpm2-tools, while no vault holds the TPM
    const cert = new Uint8Array(1500).map((_, i) => (i * 7 + 3) & 0xff)
    writeFileSync(join(dir, 'cert.der'), cert)
    const env = { ...process.env, TPM2TOOLS_TCTI: `swtpm:path=${swtpm.endpoint.replace(/^unix:/, '')}` }
    const def = spawnSync('tpm2_nvdefine', ['0x1c0000a', '-C', 'o', '-s', String(cert.length), '-a', 'ownerread|ownerwrite|authread|no_da'], { env, encoding: 'utf8' })
    t.equal(def.status, 0, `tpm2_nvdefine: ${def.stderr}`)
    const wr = spawnSync('tpm2_nvwrite', ['0x1c0000a', '-C', 'o', '-i', join(dir, 'cert.der')], { env, encoding: 'utf8' })
    t.equal(wr.status, 0, `tpm2_nvwrite: ${wr.stderr}`)
    // an owner-read-only index (read with TPM_RH_OWNER authorization)
    const small = cert.subarray(0, 100)
    writeFileSync(join(dir, 'small.der'), small)
    t.equal(spawnSync('tpm2_nvdefine', ['0x1c00002', '-C', 'o', '-s', '100', '-a', 'ownerread|ownerwrite|no_da'], { env }).status, 0, 'owner-read index defined')
    t.equal(spawnSync('tpm2_nvwrite', ['0x1c00002', '-C', 'o', '-i', join(dir, 'small.der')], { env }).status, 0, 'and written')
    vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
    t.teardown(() => vault.close())
    t.same(await vault.ekCertificate(), cert, 'the NV contents')
    t.same(await vault.ekCertificate(0x01c00002), small, 'owner-read index')
    t.same((await vault.tpmHandles()).sessions, [])
  })
})

t.test('verifier service: AK enrolment over secure channels (enrolStart/enrolFinish), then tpm2 evidence appraised without pinning', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: t.testdir() })
  t.teardown(() => vault.close())
  const net = new MemoryNetwork()
  let skew = 0 // the services' clock runs `skew` ms ahead (expiry)
  const mk = async (name: string, clock = false): Promise<Node> => {
    const node = await new Node({ name, logger: silentLogger, ...(clock ? { now: () => Date.now() + skew } : {}) }).start()
    node.addTransport(new MemoryTransport(node, { network: net }))
    await (node.transport(4) as MemoryTransport).listen(name, { allow: ['echo', 'secure', 'verifier'], transit: true })
    t.teardown(() => node.stop())
    return node
  }
  const log = new MeasurementLog(vault)
  const attester = await Tpm2Attester.create({ vault, eventLog: log })
  await log.measureBoot(SIM_PLATFORM_BOOT)
  const ekPub = await vault.ekPublic()
  const akInfo = await vault.tpmPublic(attester.akHandle)
  const admin = SoftwareIdentity.generate()

  /** A verifier service at memory address `name` (listener `secure`), with no AK pinned. */
  const service = async (name: string, options: { tofuEk?: boolean; enrolTpm?: boolean } = {}) => {
    const V = await mk(name, true)
    const verifier = new Verifier({ id: `verifier-${name}`, trustAnchors: {}, referenceValues: new ReferenceValues([log.referenceSet('golden')]) })
    const signer = VerifierKey.generate()
    const enrolled: Array<{ spki: Uint8Array; kid: string; ekPoint: Uint8Array }> = []
    const allowed: Uint8Array[][] = []
    const vCh = new SecureChannels(V, { identity: SoftwareIdentity.generate() })
    await vCh.listen('secure', { allow: ['verifier'] })
    const svc = new VerifierService(V, {
      verifier,
      signer,
      admins: [admin.identifier],
      enrolTpm: options.enrolTpm ?? true,
      tofuEk: options.tofuEk ?? false,
      onAkEnrolled: (spki, r) => void enrolled.push({ spki, kid: r.kid, ekPoint: r.ekPoint }),
      onEksChanged: (eks) => void allowed.push(eks),
    })
    return { V, verifier, signer, svc, enrolled, allowed, route: `/memory/${name}/secure/secure/service/verifier` }
  }
  /** A node (its own secure channels) with a route to `text`. */
  const client = async (name: string, text: string, identity = SoftwareIdentity.generate()) => {
    const node = await mk(name)
    const channels = new SecureChannels(node, { identity, attestation: { attesters: [attester] } })
    const { route } = await resolveRoute(text, channels)
    return { node, channels, route }
  }

  await t.test('tofu: the AK is enrolled, and a relying party using the service then gets affirming tpm2 results', async (t) => {
    const v = await service('Vt', { tofuEk: true })
    const D = await client('Dt', v.route)
    // before enrolment: the AK is unknown
    const R = await mk('Rt')
    const rCh = new SecureChannels(R, { identity: SoftwareIdentity.generate() })
    const dListen = await D.channels.listen('secure', { allow: ['echo'] })
    t.ok(dListen)
    const remote = new RemoteVerifier(R, { route: async () => (await resolveRoute(v.route, rCh)).route, keys: v.signer.trusted() })
    const before = await rCh.connect(route('4#Dt', 'secure'), { attestation: { require: ['tpm2'], verifier: remote }, handshakeTimeout: 5_000 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isThroughlineError(before), `refused before enrolment (${String(before)})`)

    const kid = await enrolWithVerifier(D.node, D.route, vault, attester.akHandle)
    t.equal(kid, spkiKeyId(await attester.akPublicSpki()))
    t.equal(v.enrolled.length, 1, 'onAkEnrolled called once')
    t.same(v.enrolled[0]!.spki, await attester.akPublicSpki())
    t.same(v.enrolled[0]!.ekPoint, eccPublicPoint(ekPub))
    t.equal(v.svc.stats.enrolled, 1)

    const ch = await rCh.connect(route('4#Dt', 'secure'), { attestation: { require: ['tpm2'], verifier: remote }, handshakeTimeout: 5_000 })
    t.equal(ch.attestation?.status, 'affirming', `affirming without pinning (${ch.attestation?.reason ?? ''})`)
    t.equal(ch.attestation?.suite, 'tpm2')
    t.equal(ch.attestation?.trustVector.hardware, 2)
    // enrolling again is idempotent
    t.equal(await enrolWithVerifier(D.node, D.route, vault, attester.akHandle), kid)
  })

  await t.test('refusals are typed: wrong secret, another channel, bad AK attributes, an EK not allowed', async (t) => {
    const v = await service('Va')
    const D = await client('Da', v.route)
    const ask = (c: { node: Node; route: ReturnType<typeof route> }, req: Record<string, unknown>) =>
      verifierRequest(c.node, c.route, req).then(
        () => undefined,
        (e: unknown) => e as ThroughlineError,
      )
    const refusedAs = (err: ThroughlineError | undefined, reason: string, what: string): void => {
      t.ok(isThroughlineError(err, 'ERR_ATTEST_ENROL_FAILED'), `${what}: ERR_ATTEST_ENROL_FAILED (got ${String(err)})`)
      t.equal(err?.details?.['reason'], reason, `${what}: ${reason}`)
    }
    // the EK is not allowed (no tofu)
    refusedAs(await ask(D, { op: 'enrolStart', ekPublic: ekPub, akPublic: akInfo.public }), 'ek_not_allowed', 'EK not allowed')
    await t.rejects(enrolWithVerifier(D.node, D.route, vault, attester.akHandle), { code: 'ERR_ATTEST_ENROL_FAILED', details: { reason: 'ek_not_allowed' } })
    // only admins allow EKs
    await t.rejects(verifierRequest(D.node, D.route, { op: 'allowEk', ekPublic: ekPub }), { code: 'ERR_VERIFIER_DENIED' })
    const A = await client('Aa', v.route, admin)
    t.match(await verifierRequest(A.node, A.route, { op: 'allowEk', ekPublic: ekPub }), { ok: true, added: true })
    t.match(await verifierRequest(A.node, A.route, { op: 'allowEk', ekPublic: eccPublicPoint(ekPub) }), { ok: true, added: false }, 'the same EK as a point')
    t.same((await verifierRequest(A.node, A.route, { op: 'listEks' }))['eks'], [toHex(eccPublicPoint(ekPub))])
    t.equal(v.allowed.length, 1, 'onEksChanged once')
    await t.rejects(verifierRequest(A.node, A.route, { op: 'allowEk', ekPublic: new Uint8Array([1, 2, 3]) }), { code: 'ERR_ATTEST_VERIFIER_FAILED', details: { remoteCode: 'ERR_BAD_REQUEST' } })

    // an AK with bad attributes (the real AK with fixedTPM cleared)
    const base = parsePublic(akInfo.public, true) as EccPublic
    const badAk = new TpmWriter(200).sized((w) => writePublic(w, { ...base, objectAttributes: base.objectAttributes & ~TPMA_OBJECT.fixedTPM })).finish()
    refusedAs(await ask(D, { op: 'enrolStart', ekPublic: ekPub, akPublic: badAk }), 'ak_attributes', 'AK without fixedTPM')
    // a non-restricted signing key of the same TPM
    const signer = await vault.generateSigningKey('p256')
    refusedAs(await ask(D, { op: 'enrolStart', ekPublic: ekPub, akPublic: (await vault.tpmPublic(signer)).public }), 'ak_attributes', 'a signing key')

    // a wrong secret: refused, and the pending secret is gone (the right one no longer works)
    const c1 = await verifierRequest(D.node, D.route, { op: 'enrolStart', ekPublic: ekPub, akPublic: akInfo.public })
    const right = await vault.activateCredential(attester.akHandle, c1['credentialBlob'] as Uint8Array, c1['encryptedSecret'] as Uint8Array)
    refusedAs(await ask(D, { op: 'enrolFinish', secret: new Uint8Array(32) }), 'secret_mismatch', 'wrong secret')
    refusedAs(await ask(D, { op: 'enrolFinish', secret: right }), 'no_pending', 'one answer per credential')
    refusedAs(await ask(D, { op: 'enrolFinish', secret: 'text' }), 'no_pending', 'nothing pending')

    // the right secret on another channel (another node) is refused; the pending one stays for its channel
    const c2 = await verifierRequest(D.node, D.route, { op: 'enrolStart', ekPublic: ekPub, akPublic: akInfo.public })
    const secret2 = await vault.activateCredential(attester.akHandle, c2['credentialBlob'] as Uint8Array, c2['encryptedSecret'] as Uint8Array)
    const O = await client('Oa', v.route)
    refusedAs(await ask(O, { op: 'enrolFinish', secret: secret2 }), 'no_pending', "another channel's enrolFinish")
    t.equal(v.enrolled.length, 0, 'nothing enrolled so far')
    t.match(await verifierRequest(D.node, D.route, { op: 'enrolFinish', secret: secret2 }), { ok: true, ak: spkiKeyId(await attester.akPublicSpki()) }, 'the same channel succeeds')
    t.equal(v.enrolled.length, 1)
    // with the EK allowed, the helper works end to end
    t.equal(await enrolWithVerifier(D.node, D.route, vault, attester.akHandle), spkiKeyId(await attester.akPublicSpki()))
    // an expired pending secret
    const c3 = await verifierRequest(D.node, D.route, { op: 'enrolStart', ekPublic: ekPub, akPublic: akInfo.public })
    const secret3 = await vault.activateCredential(attester.akHandle, c3['credentialBlob'] as Uint8Array, c3['encryptedSecret'] as Uint8Array)
    skew = ENROL_PENDING_MS + 1
    refusedAs(await ask(D, { op: 'enrolFinish', secret: secret3 }), 'expired', 'after 60 s')
    skew = 0
  })

  await t.test('a service without enrolment refuses enrolStart', async (t) => {
    const v = await service('Vn', { enrolTpm: false, tofuEk: true })
    const D = await client('Dn', v.route)
    await t.rejects(verifierRequest(D.node, D.route, { op: 'enrolStart', ekPublic: ekPub, akPublic: akInfo.public }), { code: 'ERR_VERIFIER_DENIED' })
  })
})
