// Vaults: the compliance suite for the memory and file vaults, and the file vault's at-rest
// properties (wrong passphrase, truncation, a flipped byte, a crash between write and rename).
import t from 'tap'
import { readFileSync, writeFileSync, statSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { SoftwareVault } from '../src/vault/index.ts'
import { vaultCompliance } from './compliance/vault.ts'

const FAST = { N: 1024, r: 8, p: 1 } // tests only: cheap scrypt

t.test('compliance: memory vault', async (t) => {
  await vaultCompliance(t, { name: 'memory', make: async () => SoftwareVault.memory(), algs: ['ed25519', 'p256'], pcrSealing: false })
})

t.test('compliance: file vault', async (t) => {
  let n = 0
  await vaultCompliance(t, {
    name: 'file',
    make: async (t) => SoftwareVault.create({ path: join(t.testdir(), `v${++n}.vault`), secret: { passphrase: 'pw', scrypt: FAST } }),
    algs: ['ed25519', 'p256'],
    pcrSealing: false,
  })
})

t.test('file vault: keys persist, encrypted at rest, mode 0600', async (t) => {
  const path = join(t.testdir(), 'keys.vault')
  const v = await SoftwareVault.create({ path, secret: { passphrase: 'correct horse', scrypt: FAST } })
  const h = await v.generateSigningKey('ed25519')
  const x = await v.generateX25519()
  const pub = await v.signingPublicKey(h)
  const sealed = await v.seal(Buffer.from('s'))
  await v.close()
  t.equal(statSync(path).mode & 0o777, 0o600)
  const raw = readFileSync(path)
  t.equal(raw.subarray(0, 8).toString(), 'TLVAULT1')
  t.notOk(raw.includes(Buffer.from(h)), 'handles are not visible at rest')
  const again = await SoftwareVault.open({ path, secret: { passphrase: 'correct horse' } })
  t.same(await again.signingPublicKey(h), pub)
  t.same((await again.listKeys()).sort(), [h, x].sort())
  t.equal(Buffer.from(await again.unseal(sealed)).toString(), 's', 'the sealing key persists')
  await again.close()
  await t.rejects(SoftwareVault.create({ path, secret: { passphrase: 'x', scrypt: FAST } }), { code: 'ERR_VAULT_EXISTS' })
  await t.rejects(SoftwareVault.open({ path: join(t.testdir(), 'none'), secret: { passphrase: 'x' } }), { code: 'ERR_VAULT_NOT_FOUND' })
  // a key file instead of a passphrase
  const kf = join(t.testdir(), 'kf.vault')
  const key = Buffer.alloc(32, 7)
  const kv = await SoftwareVault.create({ path: kf, secret: { keyFile: key } })
  await kv.generateX25519()
  await kv.close()
  t.equal((await (await SoftwareVault.open({ path: kf, secret: { keyFile: key } })).listKeys()).length, 1)
  await t.rejects(SoftwareVault.open({ path: kf, secret: { keyFile: Buffer.alloc(32, 8) } }), { code: 'ERR_VAULT_DECRYPT' })
  await t.rejects(SoftwareVault.open({ path: kf, secret: { passphrase: 'x' } }), { code: 'ERR_VAULT_DECRYPT' })
})

t.test('file vault: wrong passphrase, truncation, a flipped byte — typed errors, file unchanged', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'v.vault')
  const v = await SoftwareVault.create({ path, secret: { passphrase: 'pw', scrypt: FAST } })
  await v.generateSigningKey('ed25519')
  await v.close()
  const original = readFileSync(path)
  await t.rejects(SoftwareVault.open({ path, secret: { passphrase: 'wrong' } }), { code: 'ERR_VAULT_DECRYPT' })
  t.same(readFileSync(path), original, 'unchanged after a wrong passphrase')
  for (const cut of [0, 7, 20, original.length - 17, original.length - 1]) {
    writeFileSync(path, original.subarray(0, cut))
    await t.rejects(SoftwareVault.open({ path, secret: { passphrase: 'pw' } }), { code: /^ERR_VAULT_(CORRUPT|DECRYPT)$/ }, `truncated to ${cut}`)
    t.equal(readFileSync(path).length, cut, 'and not rewritten')
  }
  let flips = 0
  for (let i = 0; i < original.length; i += Math.max(1, Math.floor(original.length / 40))) {
    const bad = Buffer.from(original)
    bad[i]! ^= 0x10
    writeFileSync(path, bad)
    await t.rejects(SoftwareVault.open({ path, secret: { passphrase: 'pw' } }), { code: /^ERR_VAULT_(CORRUPT|DECRYPT)$/ }, `byte ${i} flipped`)
    t.same(readFileSync(path), bad, 'not rewritten')
    flips++
  }
  t.ok(flips >= 40)
  writeFileSync(path, original)
  t.ok(await SoftwareVault.open({ path, secret: { passphrase: 'pw' } }), 'the untouched file still opens')
})

t.test('file vault: a crash between write and rename leaves the old vault readable', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'v.vault')
  const v = await SoftwareVault.create({ path, secret: { passphrase: 'pw', scrypt: FAST } })
  const before = await v.generateSigningKey('ed25519')
  await v.close()
  // a vault whose rename "crashes": the new content reaches a temp file and no further
  class CrashingVault extends SoftwareVault {
    protected override async renameIntoPlace(): Promise<void> {
      throw new Error('simulated crash before rename')
    }
  }
  const opened = await SoftwareVault.open({ path, secret: { passphrase: 'pw' } })
  Object.setPrototypeOf(opened, CrashingVault.prototype)
  await t.rejects(opened.generateSigningKey('ed25519'), /simulated crash/)
  const after = await SoftwareVault.open({ path, secret: { passphrase: 'pw' } })
  t.same(await after.listKeys(), [before], 'the old vault, intact')
  t.same(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file left behind')
})
