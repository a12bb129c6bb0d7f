// The vault compliance suite: every vault (memory, file, TPM) runs it. Handles only: signing
// keys sign and verify with node:crypto, X25519 keys agree, sealed secrets come back and tampered
// ones fail with a typed error, deleted keys are gone, and no method hands out a signing secret.
import type { Test } from 'tap'
import { createPublicKey, verify, diffieHellman, createPrivateKey } from 'node:crypto'
import { verifyBinding, createBinding } from '../../src/channel/identity.ts'
import { vaultIdentity, type Vault } from '../../src/vault/index.ts'

function publicKeyObject(alg: string, pub: Uint8Array) {
  const b = Buffer.from(pub)
  return alg === 'ed25519'
    ? createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b.toString('base64url') }, format: 'jwk' })
    : createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b.subarray(1, 33).toString('base64url'), y: b.subarray(33).toString('base64url') }, format: 'jwk' })
}

function x25519(secret: Uint8Array, pub: Uint8Array): Buffer {
  const priv = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.from(secret).toString('base64url'), x: 'A'.repeat(43) }, format: 'jwk' })
  const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(pub).toString('base64url') }, format: 'jwk' })
  return diffieHellman({ privateKey: priv, publicKey: peer })
}

export interface VaultUnderTest {
  name: string
  /** A fresh vault for one test. */
  make(t: Test): Promise<Vault>
  /** Signing algorithms it supports. */
  algs: ('ed25519' | 'p256')[]
  /** Whether PCR-bound sealing is supported. */
  pcrSealing: boolean
}

export async function vaultCompliance(t: Test, vut: VaultUnderTest): Promise<void> {
  for (const alg of vut.algs) {
    await t.test(`${vut.name}: ${alg} signing keys sign what node:crypto verifies`, async (t) => {
      const v = await vut.make(t)
      const h = await v.generateSigningKey(alg)
      t.equal(await v.signingAlgorithm(h), alg)
      const pub = await v.signingPublicKey(h)
      t.equal(pub.length, alg === 'ed25519' ? 32 : 65)
      t.same(await v.signingPublicKey(h), pub, 'the public key is stable')
      const data = Buffer.from('sign me')
      const sig = await v.sign(h, data)
      const key = publicKeyObject(alg, pub)
      const ok = alg === 'ed25519' ? verify(null, data, key, sig) : verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)
      t.ok(ok, 'the signature verifies')
      t.notOk(alg === 'ed25519' ? verify(null, Buffer.from('other'), key, sig) : verify('sha256', Buffer.from('other'), { key, dsaEncoding: 'ieee-p1363' }, sig), 'and not for other data')
      // a vault identity signs key bindings that the channel layer accepts
      const id = await vaultIdentity(v, h)
      const staticKey = new Uint8Array(32).fill(3)
      t.equal(verifyBinding(await createBinding(id, staticKey), staticKey), id.identifier)
    })
  }

  await t.test(`${vut.name}: X25519 keys agree`, async (t) => {
    const v = await vut.make(t)
    const a = await v.generateX25519()
    const b = await v.generateX25519()
    const ka = await v.x25519KeyPair(a)
    const kb = await v.x25519KeyPair(b)
    t.same(await v.x25519PublicKey(a), ka.publicKey)
    t.same(x25519(ka.secretKey, kb.publicKey), x25519(kb.secretKey, ka.publicKey), 'DH(a, B) = DH(b, A)')
  })

  await t.test(`${vut.name}: seal and unseal; tampering is a typed error`, async (t) => {
    const v = await vut.make(t)
    const secret = Buffer.from('a small secret')
    const blob = await v.seal(secret)
    t.same(Buffer.from(await v.unseal(blob)), secret)
    const bad = Buffer.from(blob)
    bad[bad.length - 1]! ^= 1
    await t.rejects(v.unseal(bad), { code: /^ERR_(VAULT_DECRYPT|VAULT_CORRUPT|TPM)$/ })
    await t.rejects(v.unseal(Buffer.from(blob).subarray(0, 5)), { code: /^ERR_(VAULT_DECRYPT|VAULT_CORRUPT|TPM)$/ })
    if (!vut.pcrSealing) await t.rejects(v.seal(secret, { pcrs: [16] }), { code: 'ERR_VAULT_UNSUPPORTED' })
  })

  await t.test(`${vut.name}: handles: list, delete, unknown`, async (t) => {
    const v = await vut.make(t)
    const h1 = await v.generateSigningKey(vut.algs[0]!)
    const h2 = await v.generateX25519()
    t.same((await v.listKeys()).sort(), [h1, h2].sort())
    await v.deleteKey(h1)
    t.same(await v.listKeys(), [h2])
    await t.rejects(v.sign(h1, Buffer.from('x')), { code: 'ERR_VAULT_KEY_NOT_FOUND' })
    await t.rejects(v.sign(h2, Buffer.from('x')), { code: 'ERR_VAULT_KEY_NOT_FOUND' }, 'an X25519 handle does not sign')
    await t.rejects(v.x25519KeyPair('nope'), { code: 'ERR_VAULT_KEY_NOT_FOUND' })
    // no method of the vault hands out a signing secret
    for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(v))) {
      t.notMatch(name, /secret|private|export/i, `no "${name}" method`)
    }
    await v.close()
    await t.rejects(v.listKeys(), { code: 'ERR_VAULT_CLOSED' })
  })
}
