// The TPM vault (src/vault/tpm-vault.ts) against a private swtpm: the vault compliance suite,
// identity signatures, quotes and certifications that verify with node:crypto, PCR-bound sealing,
// keys that re-load from their blobs after a swtpm restart, handle hygiene with swtpm's 3 object
// slots, and a secure channel through a relay between a TPM-vault identity and a software one.
import t, { type Test } from 'tap'
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { isThroughlineError, type ThroughlineError } from '../src/errors.ts'
import { createBinding, verifyBinding } from '../src/channel/identity.ts'
import { SecureChannels, trustIdentifiers, type SecureChannel } from '../src/channel/index.ts'
import { Node, silentLogger, route, local, type Message } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'
import { SoftwareVault, TpmVault, TPM_VAULT_INDEX, vaultIdentity } from '../src/vault/index.ts'
import { TPM_HT, TPM_ST, TPMA_OBJECT, TpmClient, objectName, openTpmTransport, parsePublic, publicArea } from '../src/vault/tpm/index.ts'
import { vaultCompliance } from './compliance/vault.ts'
import { startSwtpm, swtpmAvailable, type Swtpm } from './helpers/swtpm.ts'

const noSwtpm = swtpmAvailable() ? false : 'swtpm is not installed (scripts install swtpm swtpm-tools tpm2-tools in CI)'

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest()
}

function p256Key(point: Uint8Array): KeyObject {
  const b = Buffer.from(point)
  return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b.subarray(1, 33).toString('base64url'), y: b.subarray(33).toString('base64url') }, format: 'jwk' })
}

const verifies = (point: Uint8Array, data: Uint8Array, sig: Uint8Array): boolean => verify('sha256', data, { key: p256Key(point), dsaEncoding: 'ieee-p1363' }, sig)

function expectTpmError(t: Test, err: unknown, name: string): ThroughlineError {
  t.ok(isThroughlineError(err, 'ERR_TPM'), `ERR_TPM (got ${String(err)})`)
  const e = err as ThroughlineError
  t.equal(e.details?.['name'], name, `names ${name}`)
  t.match(e.message, name)
  return e
}

/** The transient objects and sessions loaded in the TPM, read without flushing anything. */
async function tpmLeftovers(endpoint: string): Promise<{ objects: number[]; sessions: number[] }> {
  const c = new TpmClient(openTpmTransport(endpoint), { shutdownOnClose: false })
  try {
    return { objects: await c.getHandles(TPM_HT.TRANSIENT), sessions: await c.getHandles(TPM_HT.HMAC_SESSION) }
  } finally {
    await c.transport.close()
  }
}

t.test('TPM vault against swtpm', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  /** A vault on a fresh dir, closed at the end of `t` (swtpm serves one connection at a time). */
  const open = async (t: Test, dir = t.testdir()): Promise<TpmVault> => {
    const v = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
    t.teardown(() => v.close())
    return v
  }

  await t.test('compliance', async (t) => {
    await vaultCompliance(t, { name: 'tpm', make: (t) => open(t), algs: ['p256'], pcrSealing: true })
  })

  await t.test('an identity key in the TPM: signatures verify with node:crypto; Ed25519 is unsupported; certify proves residency', async (t) => {
    const v = await open(t)
    await t.rejects(v.generateSigningKey('ed25519'), { code: 'ERR_VAULT_UNSUPPORTED' })
    const h = await v.generateSigningKey('p256')
    const id = await vaultIdentity(v, h)
    t.equal(id.alg, 'p256')
    const data = randomBytes(100)
    const sig = await id.sign(data)
    t.equal(sig.length, 64, 'IEEE P1363 r ‖ s')
    t.ok(verifies(id.publicKey, data, sig), 'verifies with node:crypto (dsaEncoding ieee-p1363)')
    t.notOk(verifies(id.publicKey, randomBytes(100), sig))
    const staticKey = randomBytes(32)
    t.equal(verifyBinding(await createBinding(id, staticKey), staticKey), id.identifier, 'a key binding signed in the TPM verifies')

    const ak = await v.generateAttestationKey()
    await t.rejects(v.sign(ak, data), { code: 'ERR_VAULT_KEY_NOT_FOUND' }, 'an attestation key signs no external data')
    await t.rejects(v.signingPublicKey(ak), { code: 'ERR_VAULT_KEY_NOT_FOUND' })
    const info = await v.tpmPublic(h)
    const akInfo = await v.tpmPublic(ak)
    t.equal(parsePublic(akInfo.public, true).objectAttributes & TPMA_OBJECT.restricted, TPMA_OBJECT.restricted, 'the AK is restricted')
    const nonce = randomBytes(32)
    const c = await v.certify(h, ak, nonce)
    t.equal(c.parsed.type, TPM_ST.ATTEST_CERTIFY)
    t.same(Buffer.from(c.parsed.extraData), nonce)
    t.same(Buffer.from(c.parsed.certify!.name), Buffer.from(objectName(publicArea(c.keyPublic))), 'certified Name = nameAlg ‖ H(TPMT_PUBLIC)')
    t.same(Buffer.from(c.parsed.certify!.name), Buffer.from(info.name))
    const attrs = parsePublic(c.keyPublic, true).objectAttributes
    t.ok(attrs & TPMA_OBJECT.fixedTPM && attrs & TPMA_OBJECT.sensitiveDataOrigin, 'fixedTPM and sensitiveDataOrigin: generated in, and never leaves, the TPM')
    t.same(Buffer.from(info.point), Buffer.from(id.publicKey))
    t.ok(verifies(c.akPublicKey, c.attest, c.signature), 'the certification verifies with the AK')
  })

  await t.test('quote with a 32-byte nonce: magic, type, extraData, clock; signature and PCR digest verify', async (t) => {
    const v = await open(t)
    await v.pcrExtend(16, sha256(Buffer.from('quote me')))
    const ak = await v.generateAttestationKey()
    const nonce = randomBytes(32)
    const pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 16]
    const q = await v.quote(ak, nonce, pcrs)
    t.equal(q.parsed.magic, 0xff544347, 'magic TPM_GENERATED_VALUE')
    t.equal(q.parsed.type, TPM_ST.ATTEST_QUOTE, 'type TPM_ST_ATTEST_QUOTE')
    t.same(Buffer.from(q.parsed.extraData), nonce, 'extraData = nonce')
    t.equal(typeof q.parsed.clockInfo.clock, 'bigint')
    t.ok(q.parsed.clockInfo.clock > 0n, `clock ${q.parsed.clockInfo.clock}`)
    t.equal(typeof q.parsed.clockInfo.resetCount, 'number')
    t.equal(typeof q.parsed.clockInfo.restartCount, 'number')
    t.equal(typeof q.parsed.clockInfo.safe, 'boolean')
    t.same(q.parsed.quote!.pcrSelect, [{ hashAlg: 0x000b, pcrs }])
    t.same(Buffer.from(q.akPublicKey), Buffer.from((await v.tpmPublic(ak)).point))
    t.ok(verifies(q.akPublicKey, q.attest, q.signature), 'the quote signature verifies over SHA-256(TPMS_ATTEST)')
    const tampered = Buffer.from(q.attest)
    tampered[tampered.length - 1]! ^= 1
    t.notOk(verifies(q.akPublicKey, tampered, q.signature))
    const values = await v.pcrRead(pcrs)
    t.same(Buffer.from(q.parsed.quote!.pcrDigest), sha256(...pcrs.map((p) => values.get(p)!)), 'pcrDigest = SHA-256(PCR values read from the TPM)')
    t.same([...q.pcrValues.keys()], pcrs)
    t.same(Buffer.from(values.get(16)!), sha256(Buffer.alloc(32), sha256(Buffer.from('quote me'))))
    await t.rejects(v.quote(ak, randomBytes(65), pcrs), { code: 'ERR_INVALID_ARGUMENT' })
    const q2 = await v.quote(ak, nonce, pcrs)
    t.ok(q2.parsed.clockInfo.clock >= q.parsed.clockInfo.clock, 'the clock does not go back')
  })

  await t.test('PCR-bound sealing: unseal works, then fails with TPM_RC_POLICY_FAIL after PCR_Extend', async (t) => {
    const v = await open(t)
    const secret = randomBytes(48)
    const blob = await v.seal(secret, { pcrs: [16, 23] })
    const plain = await v.seal(Buffer.from('no policy'))
    t.same(Buffer.from(await v.unseal(blob)), secret, 'unseals while the PCRs hold their values')
    const x = await v.generateX25519Bound({ pcrs: [23] })
    const x2 = await v.generateX25519Bound({ pcrs: [23] })
    const pair = await v.x25519KeyPair(x)
    t.same(pair.publicKey, await v.x25519PublicKey(x))

    await v.pcrExtend(23, sha256(Buffer.from('something else ran')))
    const err = await v.unseal(blob).catch((e: unknown) => e)
    const e = expectTpmError(t, err, 'TPM_RC_POLICY_FAIL')
    t.equal(e.details?.['rc'], 0x99d)
    t.equal(e.details?.['kind'], 'session')
    t.equal(e.details?.['command'], 'TPM2_Unseal')
    expectTpmError(t, await v.x25519KeyPair(x2).catch((e: unknown) => e), 'TPM_RC_POLICY_FAIL')
    t.same(await v.x25519KeyPair(x), pair, 'a pair unsealed before the change stays in memory')
    t.equal(Buffer.from(await v.unseal(plain)).toString(), 'no policy', 'a blob without PCRs is not affected')
    await t.rejects(v.seal(new Uint8Array(129)), { code: 'ERR_INVALID_ARGUMENT' })
    await t.rejects(v.unseal(Buffer.from('TLS\x01garbage')), { code: 'ERR_VAULT_CORRUPT' })
    const loaded = await v.tpmHandles()
    t.equal(loaded.objects.length, 1, 'after the failures: only the SRK is loaded (sealed objects flushed)')
    t.same(loaded.sessions, [], 'and no policy session is left')
  })

  await t.test('ten keys used in turn never hit TPM_RC_OBJECT_MEMORY; close leaves nothing loaded', async (t) => {
    const dir = t.testdir()
    const v = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
    const keys: string[] = []
    for (let i = 0; i < 10; i++) keys.push(await v.generateSigningKey('p256'))
    const ak = await v.generateAttestationKey()
    for (let round = 0; round < 2; round++) {
      for (const [i, h] of keys.entries()) {
        const data = Buffer.from(`round ${round} key ${i}`)
        t.ok(verifies(await v.signingPublicKey(h), data, await v.sign(h, data)), `round ${round} key ${i}`)
        if (i % 3 === 0) {
          const c = await v.certify(h, ak, randomBytes(16)) // two objects at once beside the SRK
          t.ok(verifies(c.akPublicKey, c.attest, c.signature))
        }
      }
    }
    // concurrent callers are serialized by the vault's queue
    const all = await Promise.all(keys.map((h, i) => v.sign(h, Buffer.from(`concurrent ${i}`))))
    for (const [i, sig] of all.entries()) t.ok(verifies(await v.signingPublicKey(keys[i]!), Buffer.from(`concurrent ${i}`), sig))
    await v.close()
    await v.close()
    await t.rejects(v.sign(keys[0]!, Buffer.from('x')), { code: 'ERR_VAULT_CLOSED' })
    t.same(await tpmLeftovers(swtpm.endpoint), { objects: [], sessions: [] }, 'every object flushed at close')
  })

  await t.test('the index: mode 0600, blobs and public keys only, typed errors', async (t) => {
    const dir = t.testdir()
    const v = await open(t, dir)
    const h = await v.generateSigningKey('p256')
    const x = await v.generateX25519()
    const pair = await v.x25519KeyPair(x)
    await v.close()
    const path = join(dir, TPM_VAULT_INDEX)
    t.equal(statSync(path).mode & 0o777, 0o600)
    const text = readFileSync(path, 'utf8')
    const body = JSON.parse(text) as { keys: Record<string, Record<string, unknown>> }
    t.same(Object.keys(body.keys).sort(), [h, x].sort())
    t.same(Object.keys(body.keys[h]!).sort(), ['kind', 'private', 'public', 'publicKey'])
    t.notOk(text.includes(Buffer.from(pair.secretKey).toString('base64')) || text.includes(Buffer.from(pair.secretKey).toString('hex')), 'the X25519 secret is not at rest in clear')
    t.notOk(/context/i.test(text), 'no saved contexts')

    await t.rejects(TpmVault.open({ endpoint: swtpm.endpoint, dir: join(dir, 'none'), create: false }), { code: 'ERR_VAULT_NOT_FOUND' })
    const wrong = JSON.parse(text) as { srkName: string }
    wrong.srkName = '000b' + '00'.repeat(32)
    writeFileSync(path, JSON.stringify(wrong))
    await t.rejects(TpmVault.open({ endpoint: swtpm.endpoint, dir }), { code: 'ERR_VAULT_WRONG_TPM' }, "another TPM's keys")
    writeFileSync(path, text.replace(/"kind": "p256"/, '"kind": "x25519"'))
    await t.rejects(TpmVault.open({ endpoint: swtpm.endpoint, dir }), { code: 'ERR_VAULT_CORRUPT' })
    writeFileSync(path, text.slice(0, 40))
    await t.rejects(TpmVault.open({ endpoint: swtpm.endpoint, dir }), { code: 'ERR_VAULT_CORRUPT' })
    writeFileSync(path, text)
    const again = await open(t, dir)
    t.same((await again.listKeys()).sort(), [h, x].sort(), 'the untouched index opens')
  })
})

t.test('TPM vault: keys re-load from their blobs after a swtpm restart', { skip: noSwtpm }, async (t) => {
  const swtpm: Swtpm = await startSwtpm(t)
  const dir = t.testdir()
  const measurement = sha256(Buffer.from('boot measurement'))
  let v = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
  await v.pcrExtend(23, measurement)
  const h = await v.generateSigningKey('p256')
  const ak = await v.generateAttestationKey()
  const x = await v.generateX25519()
  const xb = await v.generateX25519Bound({ pcrs: [23] })
  const blob = await v.seal(Buffer.from('sealed before the restart'))
  const pub = await v.signingPublicKey(h)
  const akPub = (await v.tpmPublic(ak)).point
  const xPair = await v.x25519KeyPair(x)
  const xbPair = await v.x25519KeyPair(xb)
  const keys = (await v.listKeys()).sort()
  await v.close() // TPM2_Shutdown(CLEAR): no dictionary-attack count at the next start

  const pid = swtpm.pid
  await swtpm.restart()
  t.not(swtpm.pid, pid, 'a new swtpm process on the same state')
  v = await TpmVault.open({ endpoint: swtpm.endpoint, dir })
  t.teardown(() => v.close())
  t.same((await v.listKeys()).sort(), keys)
  const data = Buffer.from('after the restart')
  const sig = await v.sign(h, data)
  t.ok(verifies(pub, data, sig), 'the identity key re-loads from its blobs and signs; verifies with the key from before')
  const q = await v.quote(ak, randomBytes(32), [23])
  t.ok(verifies(akPub, q.attest, q.signature), 'the attestation key quotes')
  t.same(Buffer.from(q.pcrValues.get(23)!), Buffer.alloc(32), 'PCRs reset by the restart')
  t.same(await v.x25519KeyPair(x), xPair, 'the X25519 key unseals')
  t.equal(Buffer.from(await v.unseal(blob)).toString(), 'sealed before the restart')
  expectTpmError(t, await v.x25519KeyPair(xb).catch((e: unknown) => e), 'TPM_RC_POLICY_FAIL')
  await v.pcrExtend(23, measurement)
  t.same(await v.x25519KeyPair(xb), xbPair, 'the PCR-bound X25519 key unseals once PCR 23 is measured again')

  // a restart under an open vault: loaded handles go stale, the vault re-loads and goes on
  await swtpm.restart()
  const sig2 = await v.sign(h, data)
  t.ok(verifies(pub, data, sig2), 'a signature after a restart under the open vault')
})

t.test('a secure channel through a relay: TPM-vault identity ↔ software-vault identity', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const net = new MemoryNetwork()
  const mk = async (name: string, observe?: (dir: 'in' | 'out', f: Uint8Array) => void): Promise<Node> => {
    const node = await new Node({ name, logger: silentLogger }).start()
    node.addTransport(new MemoryTransport(node, { network: net, ...(observe ? { observe } : {}) }))
    await (node.transport(4) as MemoryTransport).listen(name, { allow: ['relay', 'forward_to_*', 'secure'], transit: true })
    t.teardown(() => node.stop())
    return node
  }

  // the device: identity key in the TPM, X25519 static key sealed by the TPM
  const tpm = await TpmVault.open({ endpoint: swtpm.endpoint, dir: t.testdir() })
  t.teardown(() => tpm.close())
  const dId = await vaultIdentity(tpm, await tpm.generateSigningKey('p256'))
  const dStatic = await tpm.generateX25519()
  // the client: a software vault
  const soft = SoftwareVault.memory()
  t.teardown(() => soft.close())
  const cId = await vaultIdentity(soft, await soft.generateSigningKey('ed25519'))
  const cStatic = await soft.generateX25519()

  const wire: Buffer[] = []
  const R = await mk('R', (_d, f) => wire.push(Buffer.from(f)))
  new RelayService(R)
  const D = await mk('D')
  startEcho(D)
  const dCh = new SecureChannels(D, { identity: dId, staticKeyPair: await tpm.x25519KeyPair(dStatic) })
  const listener = await dCh.listen('secure', { allow: ['echo', 'sink'], trust: trustIdentifiers([cId.identifier]) })
  const reg = new RelayClient(D, { relayRoute: route('4#R'), name: 'd', allow: ['secure'] })
  await new Promise((resolve) => {
    reg.once('registered', resolve)
    reg.start()
  })
  t.teardown(() => reg.stop())

  const C = await mk('C')
  const cCh = new SecureChannels(C, { identity: cId, staticKeyPair: await soft.x25519KeyPair(cStatic) })
  const responder = new Promise<SecureChannel>((resolve) => listener.once('channel', resolve))
  const ch = await cCh.connect(route('4#R', 'forward_to_d', 'secure'), { trust: trustIdentifiers([dId.identifier]), allow: ['inbox'] })
  const rch = await responder
  t.equal(ch.peer?.identifier, dId.identifier, "the client sees the TPM identity's identifier")
  t.equal(ch.peer?.alg, 'p256')
  t.equal(rch.peer?.identifier, cId.identifier, "the device sees the software identity's identifier")
  t.equal(rch.peer?.alg, 'ed25519')

  // client → device (and the echo's reply back)
  const secret = 'TPM-BACKED-SECRET-9001'
  wire.length = 0
  const reply = await C.request([ch.address, local('echo')], Buffer.from(secret))
  t.equal(Buffer.from(reply.payload).toString(), secret)
  t.equal(reply.local.peer?.identifier, dId.identifier, 'the reply carries the device identifier')
  const atDevice = new Promise<Message>((resolve) => D.startWorker('sink', { handleMessage: (_c, m) => resolve(m) }))
  C.send([ch.address, local('sink')], Buffer.from('to the device'))
  const m1 = await atDevice
  t.equal(Buffer.from(m1.payload).toString(), 'to the device')
  t.equal(m1.local.peer?.identifier, cId.identifier, 'the device sees who sent it')
  // device → client, started by the device
  const atClient = new Promise<Message>((resolve) => C.startWorker('inbox', { handleMessage: (_c, m) => resolve(m) }))
  D.send([rch.address, local('inbox')], Buffer.from('to the client'))
  const m2 = await atClient
  t.equal(Buffer.from(m2.payload).toString(), 'to the client')
  t.equal(m2.local.peer?.identifier, dId.identifier, 'the client sees who sent it')
  const relayed = Buffer.concat(wire)
  t.ok(relayed.length > 0, `the relay carried ${relayed.length} bytes`)
  t.equal(relayed.indexOf(secret), -1, 'the relay saw only ciphertext')
})

t.test('CLI: identity create NAME --vault tpm --tpm ENDPOINT; show; the store opens it', { skip: noSwtpm }, async (t) => {
  const { main } = await import('../src/cli/main.ts')
  const { IdentityStore } = await import('../src/channel/identity.ts')
  const { TpmIdentityStore } = await import('../src/vault/index.ts')
  const swtpm = await startSwtpm(t)
  const home = t.testdir()
  const run = async (...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> => {
    const out: string[] = []
    const err: string[] = []
    const code = await main(argv, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) })
    return { code, out, err }
  }
  const created = await run('identity', 'create', 'dev', '--vault', 'tpm', '--tpm', swtpm.endpoint, '--home', home)
  t.equal(created.code, 0, created.err.join('\n'))
  t.match(created.out, [/^I[0-9a-f]{40}$/])
  const identifier = created.out[0]!
  const shown = await run('identity', 'show', 'dev', '--home', home)
  t.equal(shown.code, 0)
  t.equal(shown.out[0], identifier)
  t.match(shown.out[1], /^public key \(p256\): 04[0-9a-f]{128}$/)
  t.match(shown.out[2], /^tpm vault: .*vaults\/dev \(key p256-[0-9a-f]{16}, TPM unix:/)
  t.equal(statSync(join(home, 'identities', 'dev.json')).mode & 0o777, 0o600)
  t.equal(statSync(join(home, 'vaults', 'dev', TPM_VAULT_INDEX)).mode & 0o777, 0o600)

  const again = await run('identity', 'create', 'dev', '--home', home)
  t.equal(again.code, 1)
  t.match(again.err[0], /ERR_IDENTITY_EXISTS/, 'one namespace for software and TPM identities')
  t.equal((await run('identity', 'create', 'x', '--vault', 'tpm', '--home', home)).code, 2, '--vault tpm needs --tpm')
  t.equal((await run('identity', 'create', 'x', '--vault', 'hsm', '--tpm', swtpm.endpoint, '--home', home)).code, 2)
  t.equal((await run('identity', 'create', 'x', '--tpm', swtpm.endpoint, '--home', home)).code, 2, '--tpm needs --vault tpm')
  t.equal((await run('identity', 'create', 'x', '--vault', 'tpm', '--tpm', 'nonsense', '--home', home)).code, 2, 'a bad endpoint is a usage error')
  const soft = await run('identity', 'create', 'soft', '--vault', 'software', '--home', home)
  t.equal(soft.code, 0)
  t.match((await run('identity', 'show', 'soft', '--home', home)).out[1], /^public key \(ed25519\)/)

  await t.rejects(new IdentityStore(home).load('dev'), { code: 'ERR_IDENTITY_INVALID' }, 'the software store does not take a TPM identity')
  const store = new TpmIdentityStore(home)
  t.equal(await store.read('soft'), undefined)
  await t.rejects(store.open('soft'), { code: 'ERR_IDENTITY_INVALID' })
  await t.rejects(store.open('nobody'), { code: 'ERR_IDENTITY_NOT_FOUND' })
  const { vault, identity } = await store.open('dev')
  t.teardown(() => vault.close())
  t.equal(identity.identifier, identifier)
  const data = Buffer.from('signed by a CLI-made TPM identity')
  t.ok(verifies(identity.publicKey, data, await identity.sign(data)))
})

t.test('cli: a TPM identity runs a secure listener; a client reaches it through the channel', { skip: noSwtpm }, async (t) => {
  const { runCli, startCli } = await import('./helpers/cli.ts')
  const swtpm = await startSwtpm(t)
  const home = t.testdir()
  const created = await runCli(['identity', 'create', 'dev', '--vault', 'tpm', '--tpm', swtpm.endpoint, '--home', home])
  t.equal(created.code, 0, created.stderr)
  const devId = created.stdout.trim()
  t.match(devId, /^I[0-9a-f]{40}$/)
  const node = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--home', home])
  await node.waitFor(new RegExp(`^secure listener ${devId}$`))
  const [, addr] = await node.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const r = await runCli(['send', '--to', `/tcp/${addr}/secure/secure/service/echo`, '--trust', devId, 'signed in the TPM'])
  t.equal(r.stdout, 'signed in the TPM\n', r.stderr)
  t.equal(await node.stop(), 0, 'stops cleanly, closing the TPM vault')
})
