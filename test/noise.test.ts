import t, { type Test } from 'tap'
import fc from 'fast-check'
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  CipherState,
  createHandshake,
  generateKeyPair,
  keyPairFromSecretKey,
  protocolName,
  type Handshake,
  type HandshakeOptions,
  type KeyPair,
  type PatternName,
} from '../src/channel/noise.ts'
import { encodeNonce, getCrypto, nodeCrypto, portableCrypto, type CryptoProvider } from '../src/channel/crypto/index.ts'
import { hkdf as jsHkdf, hmacSha256 as jsHmac, sha256 as jsSha256 } from '../src/channel/crypto/sha256.ts'
import { NOISE_MAX_MESSAGE, NOISE_MAX_NONCE } from '../src/channel/constants.ts'
import { isThroughlineError, type ErrorCode } from '../src/errors.ts'

const PROVIDERS = { node: nodeCrypto, portable: portableCrypto } as const
const RUNS = Number(process.env.FC_RUNS ?? 100)
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const rand = (n: number): Uint8Array => Uint8Array.from(randomBytes(n))

/** Byte-for-byte equality (Buffer and Uint8Array alike). */
function eq(t: Pick<Test, 'equal'>, a: Uint8Array, b: Uint8Array, message = 'same bytes'): void {
  t.equal(toHex(a), toHex(b), message)
}

/** The ThroughlineError code thrown by `fn`, or undefined (and the error itself for causes). */
function thrown(fn: () => unknown): { code?: ErrorCode; err?: unknown } {
  try {
    fn()
    return {}
  } catch (err) {
    return { code: isThroughlineError(err) ? err.code : undefined, err }
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Cacophony vectors, every SHA256 suite, both providers
// ---------------------------------------------------------------------------------------------

interface Vector {
  protocol_name: string
  init_prologue: string
  init_psks?: string[]
  init_static?: string
  init_ephemeral: string
  init_remote_static?: string
  resp_prologue: string
  resp_psks?: string[]
  resp_static?: string
  resp_ephemeral?: string
  resp_remote_static?: string
  handshake_hash: string
  messages: { payload: string; ciphertext: string }[]
}

const vectors = (
  JSON.parse(readFileSync(new URL('./vectors/cacophony.json', import.meta.url), 'utf8')) as { vectors: Vector[] }
).vectors

t.test('cacophony vectors (25519_ChaChaPoly_SHA256) on both providers', async (t) => {
  const suite = vectors.filter((v) => v.protocol_name.endsWith('_25519_ChaChaPoly_SHA256'))
  const names = suite.map((v) => v.protocol_name)
  for (const p of ['NN', 'XX', 'IK', 'XK']) t.ok(names.includes(protocolName(p as PatternName)), `has ${p}`)
  for (const [name, crypto] of Object.entries(PROVIDERS)) {
    for (const v of suite) {
      await t.test(`${name}: ${v.protocol_name}`, async (t) => {
        const pattern = /^Noise_(\w+?)_25519/.exec(v.protocol_name)![1] as PatternName
        const kp = (s?: string): KeyPair | undefined => (s ? keyPairFromSecretKey(hex(s), crypto) : undefined)
        const side = (initiator: boolean): Handshake => {
          const p = initiator ? 'init' : 'resp'
          return createHandshake({
            pattern,
            initiator,
            crypto,
            prologue: hex(v[`${p}_prologue`]),
            staticKeyPair: kp(v[`${p}_static`]),
            ephemeralKeyPair: kp(v[`${p}_ephemeral`]),
            remoteStaticKey: v[`${p}_remote_static`] ? hex(v[`${p}_remote_static`]!) : undefined,
            psks: v[`${p}_psks`]?.map(hex),
          })
        }
        const i = side(true)
        const r = side(false)
        t.equal(i.protocolName, v.protocol_name)
        let transport: { i: ReturnType<Handshake['split']>; r: ReturnType<Handshake['split']> } | undefined
        v.messages.forEach((m, k) => {
          const fromInitiator = k % 2 === 0
          let ciphertext: Uint8Array
          let payload: Uint8Array
          if (!i.isComplete()) {
            const [tx, rx] = fromInitiator ? [i, r] : [r, i]
            ciphertext = tx.writeMessage(hex(m.payload))
            payload = rx.readMessage(ciphertext)
          } else {
            transport ??= { i: i.split(), r: r.split() }
            const [tx, rx] = fromInitiator ? [transport.i, transport.r] : [transport.r, transport.i]
            ciphertext = tx.send.encrypt(hex(m.payload))
            payload = rx.receive.decrypt(ciphertext)
          }
          t.equal(toHex(ciphertext), m.ciphertext, `message ${k} ciphertext`)
          t.equal(toHex(payload), m.payload, `message ${k} payload`)
        })
        t.ok(r.isComplete())
        t.equal(toHex(i.handshakeHash()), v.handshake_hash, 'initiator handshake hash')
        t.equal(toHex(r.handshakeHash()), v.handshake_hash, 'responder handshake hash')
        if (v.init_static && v.resp_static) {
          t.equal(toHex(r.remoteStaticKey()!), toHex(kp(v.init_static)!.publicKey), 'responder learned rs')
          t.equal(toHex(i.remoteStaticKey()!), toHex(kp(v.resp_static)!.publicKey), 'initiator learned rs')
        }
      })
    }
  }
})

// ---------------------------------------------------------------------------------------------
// 2. node and portable agree byte for byte
// ---------------------------------------------------------------------------------------------

t.test('node and portable backends agree byte for byte', async (t) => {
  const n = nodeCrypto
  const p = portableCrypto
  await t.test('publicKeyFromSecret and dh on random keys', async (t) => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (sk, pk) => {
        const a = thrown(() => n.dh(sk, pk))
        const b = thrown(() => p.dh(sk, pk))
        if (a.code !== b.code) return false
        if (a.code === undefined && toHex(n.dh(sk, pk)) !== toHex(p.dh(sk, pk))) return false
        return toHex(n.publicKeyFromSecret!(sk)) === toHex(p.publicKeyFromSecret!(sk))
      }),
      { numRuns: 60 },
    )
    t.pass('agree')
  })
  await t.test('aeadSeal / aeadOpen on random inputs (both sides of the 256-byte JS/native switch)', async (t) => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.bigInt({ min: 0n, max: NOISE_MAX_NONCE }),
        fc.uint8Array({ maxLength: 80, size: 'max' }),
        fc.uint8Array({ maxLength: 700, size: 'max' }),
        (key, nonce, ad, pt) => {
          const c1 = n.aeadSeal(key, nonce, ad, pt)
          const c2 = p.aeadSeal(key, nonce, ad, pt)
          return (
            toHex(c1) === toHex(c2) &&
            toHex(n.aeadOpen(key, nonce, ad, c2)) === toHex(pt) &&
            toHex(p.aeadOpen(key, nonce, ad, c1)) === toHex(pt)
          )
        },
      ),
      { numRuns: RUNS },
    )
    t.pass('agree')
  })
  await t.test('sha256, hmacSha256 and hkdf on random inputs (both sides of the JS/native switch)', async (t) => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 200, size: 'max' }), { maxLength: 4 }),
        fc.uint8Array({ maxLength: 130, size: 'max' }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ maxLength: 300, size: 'max' }),
        (parts, key, ck, ikm) => {
          const same = (a: Uint8Array[], b: Uint8Array[]) => a.map(toHex).join() === b.map(toHex).join()
          return (
            toHex(n.sha256(...parts)) === toHex(p.sha256(...parts)) &&
            toHex(n.hmacSha256(key, ...parts)) === toHex(p.hmacSha256(key, ...parts)) &&
            same(n.hkdf(ck, ikm, 2), p.hkdf(ck, ikm, 2)) &&
            same(n.hkdf(ck, ikm, 3), p.hkdf(ck, ikm, 3))
          )
        },
      ),
      { numRuns: RUNS },
    )
    t.pass('agree')
  })
  await t.test('a full XX handshake with fixed ephemerals gives the same bytes; mixed providers interoperate', async (t) => {
    const s1 = generateKeyPair('portable')
    const s2 = generateKeyPair('node')
    const e1 = generateKeyPair('node')
    const e2 = generateKeyPair('portable')
    const payload2 = rand(300) // over the AEAD JS/native switch
    const run = (ci: 'node' | 'portable', cr: 'node' | 'portable'): string[] => {
      const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: s1, ephemeralKeyPair: e1, crypto: ci, prologue: bytes('p') })
      const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: s2, ephemeralKeyPair: e2, crypto: cr, prologue: bytes('p') })
      const m1 = i.writeMessage(bytes('hello'))
      r.readMessage(m1)
      const m2 = r.writeMessage(payload2)
      i.readMessage(m2)
      const m3 = i.writeMessage()
      r.readMessage(m3)
      const a = i.split()
      const b = r.split()
      const big = rand(5000)
      eq(t, b.receive.decrypt(a.send.encrypt(big)), big)
      eq(t, a.receive.decrypt(b.send.encrypt(bytes('back'))), bytes('back'))
      t.equal(toHex(i.handshakeHash()), toHex(r.handshakeHash()))
      return [m1, m2, m3, i.handshakeHash()].map(toHex)
    }
    const nn = run('node', 'node')
    t.same(run('portable', 'portable'), nn, 'same messages and hash')
    t.same(run('node', 'portable'), nn)
    t.same(run('portable', 'node'), nn)
  })
})

t.test('sha256.ts against FIPS 180-4, RFC 4231 and node:crypto', async (t) => {
  t.equal(toHex(jsSha256([bytes('abc')])), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  t.equal(toHex(jsSha256([])), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  t.equal(
    toHex(jsSha256([bytes('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')])),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  )
  // RFC 4231 test cases 1, 2 and 6 (a 131-byte key, hashed first).
  t.equal(toHex(jsHmac(new Uint8Array(20).fill(0x0b), [bytes('Hi There')])), 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')
  t.equal(toHex(jsHmac(bytes('Jefe'), [bytes('what do ya want for nothing?')])), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843')
  t.equal(
    toHex(jsHmac(new Uint8Array(131).fill(0xaa), [bytes('Test Using Larger Than Block-Size Key - Hash Key First')])),
    '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
  )
  // Every length 0..300 (all padding cases), split at a random point, against node:crypto.
  for (let len = 0; len <= 300; len++) {
    const data = rand(len)
    const cut = Math.floor(Math.random() * (len + 1))
    const parts = [data.subarray(0, cut), data.subarray(cut)]
    const key = rand(len % 97)
    if (toHex(jsSha256(parts)) !== createHash('sha256').update(data).digest('hex')) t.fail(`sha256 length ${len}`)
    if (toHex(jsHmac(key, parts)) !== createHmac('sha256', key).update(data).digest('hex')) t.fail(`hmac length ${len}`)
  }
  const ck = rand(32)
  const ikm = rand(32)
  const prk = createHmac('sha256', ck).update(ikm).digest()
  const o1 = createHmac('sha256', prk).update(Uint8Array.of(1)).digest()
  const o2 = createHmac('sha256', prk).update(o1).update(Uint8Array.of(2)).digest()
  const o3 = createHmac('sha256', prk).update(o2).update(Uint8Array.of(3)).digest()
  t.same(jsHkdf(ck, ikm, 3).map(toHex), [o1, o2, o3].map(toHex), 'Noise HKDF')
})

// ---------------------------------------------------------------------------------------------
// 3. Tampering: one error, state unchanged, the genuine message still accepted
// ---------------------------------------------------------------------------------------------

interface Pair {
  i: Handshake
  r: Handshake
}

function xxPair(crypto: 'node' | 'portable' = 'node'): Pair {
  return {
    i: createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: generateKeyPair(crypto), crypto }),
    r: createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: generateKeyPair(crypto), crypto }),
  }
}

function flipped(message: Uint8Array, bit: number): Uint8Array {
  const copy = message.slice()
  copy[bit >> 3]! ^= 1 << (bit & 7)
  return copy
}

/** readMessage(bad) fails with ERR_HANDSHAKE_FAILED and changes nothing observable. */
function rejectsUnchanged(t: Pick<Test, 'fail'>, h: Handshake, bad: Uint8Array, what: string): boolean {
  const hash = toHex(h.handshakeHash())
  const step = h.nextStep()
  const rs = h.remoteStaticKey()
  const { code, err } = thrown(() => h.readMessage(bad))
  const ok =
    code === 'ERR_HANDSHAKE_FAILED' &&
    toHex(h.handshakeHash()) === hash &&
    h.nextStep() === step &&
    (rs === undefined ? h.remoteStaticKey() === undefined : toHex(h.remoteStaticKey()!) === toHex(rs))
  if (!ok) t.fail(`${what}: ${code} ${String(err)}`)
  return ok
}

t.test('every bit flip, truncation and extension of XX messages 2 and 3 is refused without a state change', async (t) => {
  for (const crypto of ['node', 'portable'] as const) {
    const { i, r } = xxPair(crypto)
    const m1 = i.writeMessage(bytes('one'))
    r.readMessage(m1)
    const m2 = r.writeMessage(bytes('two'))
    // Every bit with node; a dense sample (every 7th bit, all tag bytes) with the slow portable DH.
    const bits = (m: Uint8Array) => [...Array(m.length * 8).keys()].filter((b) => crypto === 'node' || b % 7 === 0 || b >= (m.length - 16) * 8)
    let refused = 0
    for (const b of bits(m2)) if (rejectsUnchanged(t, i, flipped(m2, b), `m2 bit ${b}`)) refused++
    for (let len = 0; len < m2.length; len++) if (rejectsUnchanged(t, i, m2.subarray(0, len), `m2 cut ${len}`)) refused++
    rejectsUnchanged(t, i, Uint8Array.from([...m2, 0]), 'm2 extended')
    eq(t, i.readMessage(m2), bytes('two'), `${crypto}: genuine message 2 accepted after ${refused} forgeries`)
    const m3 = i.writeMessage(bytes('three'))
    for (const b of bits(m3)) rejectsUnchanged(t, r, flipped(m3, b), `m3 bit ${b}`)
    for (let len = 0; len < m3.length; len++) rejectsUnchanged(t, r, m3.subarray(0, len), `m3 cut ${len}`)
    rejectsUnchanged(t, r, Uint8Array.from([...m3, 0]), 'm3 extended')
    eq(t, r.readMessage(m3), bytes('three'), `${crypto}: genuine message 3 accepted`)
    t.equal(toHex(i.handshakeHash()), toHex(r.handshakeHash()))
    const a = i.split()
    const b = r.split()
    eq(t, b.receive.decrypt(a.send.encrypt(bytes('ok'))), bytes('ok'))
  }
})

t.test('a bit flip in XX message 1 (cleartext) is caught when message 2 is read', async (t) => {
  const s1 = generateKeyPair()
  const s2 = generateKeyPair()
  const length = 32 + 2 // e, then the payload "hi" in clear
  let caught = 0
  for (let b = 0; b < length * 8; b++) {
    const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: s1 })
    const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: s2 })
    r.readMessage(flipped(i.writeMessage(bytes('hi')), b)) // nothing authenticates message 1 yet
    let m2: Uint8Array
    try {
      m2 = r.writeMessage()
    } catch (err) {
      if (isThroughlineError(err, 'ERR_HANDSHAKE_FAILED')) caught++ // e.g. a low-order e
      continue
    }
    if (rejectsUnchanged(t, i, m2, `m1 bit ${b}`)) caught++
  }
  t.equal(caught, length * 8, 'every flip of message 1 makes the handshake fail')
  const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: s1 })
  const m1 = i.writeMessage(bytes('hi'))
  const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: s2 })
  for (let len = 0; len < 32; len++) rejectsUnchanged(t, r, m1.subarray(0, len), `m1 cut ${len}`)
  eq(t, r.readMessage(m1), bytes('hi'), 'then the genuine message 1')
})

t.test('out-of-turn calls, oversized messages, misuse: ERR_HANDSHAKE_FAILED and no state change', async (t) => {
  const { i, r } = xxPair()
  const code = (fn: () => unknown) => thrown(fn).code
  t.equal(i.nextStep(), 'write')
  t.equal(r.nextStep(), 'read')
  t.equal(code(() => i.readMessage(new Uint8Array(32))), 'ERR_HANDSHAKE_FAILED', 'initiator reads first')
  t.equal(code(() => r.writeMessage()), 'ERR_HANDSHAKE_FAILED', 'responder writes first')
  t.equal(code(() => i.split()), 'ERR_HANDSHAKE_FAILED', 'split before completion')
  const err = thrown(() => r.writeMessage()).err as Error
  t.match(err.message, /message 1/, 'the error names the message number')
  t.equal(code(() => i.writeMessage(new Uint8Array(NOISE_MAX_MESSAGE - 31))), 'ERR_HANDSHAKE_FAILED', 'payload too large')
  t.equal(code(() => r.readMessage(new Uint8Array(NOISE_MAX_MESSAGE + 1))), 'ERR_HANDSHAKE_FAILED', 'message too large')
  t.equal(code(() => i.writeMessage('x' as unknown as Uint8Array)), 'ERR_HANDSHAKE_FAILED')
  t.equal(code(() => createHandshake({ pattern: 'NN', initiator: false }).readMessage([1] as unknown as Uint8Array)), 'ERR_HANDSHAKE_FAILED')
  const m1 = i.writeMessage(new Uint8Array(NOISE_MAX_MESSAGE - 32)) // the largest message 1
  t.equal(m1.length, NOISE_MAX_MESSAGE)
  t.equal(code(() => i.writeMessage()), 'ERR_HANDSHAKE_FAILED', 'initiator writes twice')
  r.readMessage(m1)
  i.readMessage(r.writeMessage())
  r.readMessage(i.writeMessage())
  t.ok(i.isComplete() && r.isComplete())
  t.equal(i.nextStep(), 'complete')
  t.equal(code(() => i.writeMessage()), 'ERR_HANDSHAKE_FAILED', 'write after completion')
  t.equal(code(() => r.readMessage(m1)), 'ERR_HANDSHAKE_FAILED', 'read after completion')
  const hash = i.handshakeHash()
  i.split()
  t.equal(code(() => i.split()), 'ERR_HANDSHAKE_FAILED', 'split twice')
  eq(t, i.handshakeHash(), hash, 'the hash stays valid after split')
  r.destroy()
  t.equal(code(() => r.split()), 'ERR_HANDSHAKE_FAILED', 'split after destroy')
  const d = xxPair()
  d.i.destroy()
  const fixed = createHandshake({ pattern: 'NN', initiator: true, ephemeralKeyPair: generateKeyPair() })
  fixed.destroy()
  t.equal(code(() => fixed.writeMessage()), 'ERR_HANDSHAKE_FAILED', 'destroyed with a fixed ephemeral')
  t.equal(code(() => d.i.writeMessage()), 'ERR_HANDSHAKE_FAILED', 'write after destroy')
})

t.test('a failed write changes nothing either', async (t) => {
  const { i, r } = xxPair()
  r.readMessage(i.writeMessage())
  const before = toHex(r.handshakeHash())
  t.equal(thrown(() => r.writeMessage(new Uint8Array(NOISE_MAX_MESSAGE))).code, 'ERR_HANDSHAKE_FAILED')
  t.equal(toHex(r.handshakeHash()), before)
  i.readMessage(r.writeMessage(bytes('fine')))
  r.readMessage(i.writeMessage())
  t.equal(toHex(i.handshakeHash()), toHex(r.handshakeHash()))
})

// ---------------------------------------------------------------------------------------------
// 4. CipherState
// ---------------------------------------------------------------------------------------------

function transportPair(crypto: CryptoProvider = nodeCrypto): [CipherState, CipherState] {
  const key = rand(32)
  return [new CipherState(crypto, key), new CipherState(crypto, key)]
}

t.test('CipherState', async (t) => {
  await t.test('a failed decrypt does not advance the counter', async (t) => {
    const [a, b] = transportPair()
    const c0 = a.encrypt(bytes('zero'), bytes('ad'))
    const c1 = a.encrypt(bytes('one'))
    t.equal(a.nonce, 2n)
    t.equal(thrown(() => b.decrypt(flipped(c0, 3), bytes('ad'))).code, 'ERR_DECRYPT')
    t.equal(thrown(() => b.decrypt(c0, bytes('other ad'))).code, 'ERR_DECRYPT')
    t.equal(thrown(() => b.decrypt(c0.subarray(0, 15), bytes('ad'))).code, 'ERR_DECRYPT', 'shorter than a tag')
    t.equal(b.nonce, 0n)
    eq(t, b.decrypt(c0, bytes('ad')), bytes('zero'))
    eq(t, b.decrypt(c1), bytes('one'))
    t.equal(b.nonce, 2n)
  })
  await t.test('rekey: REKEY(k) = ENCRYPT(k, 2^64-1, zerolen, zeros)[0:32], same on both sides', async (t) => {
    for (const crypto of [nodeCrypto, portableCrypto]) {
      const key = rand(32)
      const expected = crypto.aeadSeal(key, NOISE_MAX_NONCE, new Uint8Array(0), new Uint8Array(32)).slice(0, 32)
      const a = new CipherState(crypto, key)
      const b = new CipherState(crypto, key)
      const c0 = a.encrypt(bytes('before'))
      a.rekey()
      t.equal(a.nonce, 1n, 'the counter is kept')
      eq(t, new CipherState(crypto, expected, 1n).encrypt(bytes('after')), a.encrypt(bytes('after')), `${crypto.name}: spec rekey`)
      eq(t, b.decrypt(c0), bytes('before'))
      const c2 = a.encrypt(bytes('x'))
      t.equal(thrown(() => b.decryptWithNonce(2n, c2)).code, 'ERR_DECRYPT', 'a side that did not rekey cannot read')
      b.rekey()
      b.setNonce(2n)
      eq(t, b.decrypt(c2), bytes('x'))
    }
  })
  await t.test('explicit nonces, out of order, do not touch the implicit counter', async (t) => {
    const [a, b] = transportPair(portableCrypto)
    const nonces = [5n, 2n, 9n, 0n, 2n ** 40n, NOISE_MAX_NONCE - 1n]
    const sealed = nonces.map((n) => a.encryptWithNonce(n, bytes(`m${n}`)))
    for (const k of [3, 0, 5, 2, 1, 4]) eq(t, b.decryptWithNonce(nonces[k]!, sealed[k]!), bytes(`m${nonces[k]}`))
    t.equal(thrown(() => b.decryptWithNonce(6n, sealed[0]!)).code, 'ERR_DECRYPT', 'wrong nonce')
    t.equal(a.nonce, 0n)
    t.equal(b.nonce, 0n)
  })
  await t.test('the reserved nonce 2^64-1 and out-of-range nonces', async (t) => {
    const [a, b] = transportPair()
    t.equal(thrown(() => a.encryptWithNonce(NOISE_MAX_NONCE, bytes('x'))).code, 'ERR_NONCE_EXHAUSTED')
    t.equal(thrown(() => b.decryptWithNonce(NOISE_MAX_NONCE, new Uint8Array(16))).code, 'ERR_NONCE_EXHAUSTED')
    t.equal(thrown(() => a.encryptWithNonce(NOISE_MAX_NONCE + 1n, bytes('x'))).code, 'ERR_INVALID_ARGUMENT')
    t.equal(thrown(() => a.encryptWithNonce(-1n, bytes('x'))).code, 'ERR_INVALID_ARGUMENT')
    t.equal(thrown(() => a.setNonce(NOISE_MAX_NONCE + 1n)).code, 'ERR_INVALID_ARGUMENT')
    a.setNonce(NOISE_MAX_NONCE - 1n)
    b.setNonce(NOISE_MAX_NONCE - 1n)
    eq(t, b.decrypt(a.encrypt(bytes('last'))), bytes('last'), 'nonce 2^64-2 is the last one')
    t.equal(thrown(() => a.encrypt(bytes('x'))).code, 'ERR_NONCE_EXHAUSTED')
    t.equal(thrown(() => b.decrypt(new Uint8Array(16))).code, 'ERR_NONCE_EXHAUSTED')
    t.equal(a.nonce, NOISE_MAX_NONCE)
  })
  await t.test('message size limit, destroy, bad keys', async (t) => {
    const [a, b] = transportPair()
    const largest = rand(NOISE_MAX_MESSAGE - 16)
    const sealed = a.encrypt(largest)
    t.equal(sealed.length, NOISE_MAX_MESSAGE)
    eq(t, b.decrypt(sealed), largest)
    t.equal(thrown(() => a.encrypt(new Uint8Array(NOISE_MAX_MESSAGE - 15))).code, 'ERR_NOISE_MESSAGE_TOO_LARGE')
    t.equal(thrown(() => b.decrypt(new Uint8Array(NOISE_MAX_MESSAGE + 1))).code, 'ERR_NOISE_MESSAGE_TOO_LARGE')
    t.ok(a.hasKey())
    const copy = a.clone()
    copy.rekey()
    eq(t, b.decrypt(a.encrypt(bytes('original key'))), bytes('original key'), 'a clone is independent')
    t.equal(copy.nonce, 1n, 'a clone has the counter of its origin')
    a.destroy()
    t.equal(thrown(() => a.clone()).code, 'ERR_KEY_DESTROYED')
    t.notOk(a.hasKey())
    t.equal(thrown(() => a.encrypt(bytes('x'))).code, 'ERR_KEY_DESTROYED')
    t.equal(thrown(() => a.rekey()).code, 'ERR_KEY_DESTROYED')
    t.equal(thrown(() => new CipherState(nodeCrypto, new Uint8Array(31))).code, 'ERR_INVALID_ARGUMENT')
  })
})

// ---------------------------------------------------------------------------------------------
// 5. All-zero DH
// ---------------------------------------------------------------------------------------------

/** Low-order X25519 points (and non-canonical encodings of them), as in libsodium's blocklist. */
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
]

t.test('all-zero DH is rejected by both backends, and fails a handshake', async (t) => {
  for (const [name, crypto] of Object.entries(PROVIDERS)) {
    const kp = crypto.generateKeyPair()
    for (const point of LOW_ORDER) {
      t.equal(thrown(() => crypto.dh(kp.secretKey, hex(point))).code, 'ERR_CRYPTO_DH_ZERO', `${name}: ${point.slice(0, 8)}`)
    }
    // Responder gets a zero ephemeral in message 1: its DH (ee) in message 2 fails.
    const { i, r } = xxPair(name as 'node' | 'portable')
    const m1 = i.writeMessage()
    r.readMessage(new Uint8Array(32))
    const w = thrown(() => r.writeMessage())
    t.equal(w.code, 'ERR_HANDSHAKE_FAILED')
    t.equal(((w.err as Error).cause as { code?: string }).code, 'ERR_CRYPTO_DH_ZERO', `${name}: cause is the zero DH`)
    // Initiator gets a zero ephemeral in message 2: readMessage fails, then accepts the real one.
    const r2 = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: generateKeyPair(crypto), crypto })
    r2.readMessage(m1)
    const m2 = r2.writeMessage()
    const forged = m2.slice()
    forged.fill(0, 0, 32)
    const f = thrown(() => i.readMessage(forged))
    t.equal(((f.err as Error).cause as { code?: string }).code, 'ERR_CRYPTO_DH_ZERO')
    i.readMessage(m2)
    r2.readMessage(i.writeMessage())
    t.ok(r2.isComplete())
  }
})

// ---------------------------------------------------------------------------------------------
// Other patterns, options and provider policy
// ---------------------------------------------------------------------------------------------

t.test('every pattern in the table completes (node provider), psk modifiers included', async (t) => {
  const patterns: PatternName[] = ['N', 'K', 'X', 'NN', 'NK', 'NX', 'KN', 'KK', 'KX', 'XN', 'XK', 'XX', 'IN', 'IK', 'IX', 'NNpsk0', 'NNpsk2', 'XXpsk3', 'IKpsk2', 'KKpsk0+psk2']
  for (const pattern of patterns) {
    const si = generateKeyPair()
    const sr = generateKeyPair()
    const psks = [...pattern.matchAll(/psk/g)].map(() => rand(32))
    const preI = /^K/.test(pattern) // initiator static is a pre-message: K, KN, KK, KX
    const preR = /^[NKX]$|^.K/.test(pattern) // responder static is a pre-message: N, K, X, NK, KK, XK, IK
    const i = createHandshake({ pattern, initiator: true, staticKeyPair: si, remoteStaticKey: preR ? sr.publicKey : undefined, psks })
    const r = createHandshake({ pattern, initiator: false, staticKeyPair: sr, remoteStaticKey: preI ? si.publicKey : undefined, psks })
    let k = 0
    while (!i.isComplete()) {
      const [tx, rx] = k++ % 2 === 0 ? [i, r] : [r, i]
      const payload = bytes(`${pattern} ${k}`)
      eq(t, rx.readMessage(tx.writeMessage(payload)), payload)
    }
    t.ok(r.isComplete(), `${pattern} complete`)
    t.equal(toHex(i.handshakeHash()), toHex(r.handshakeHash()), `${pattern} hashes agree`)
    if (!/^N/.test(pattern)) t.equal(toHex(r.remoteStaticKey()!), toHex(si.publicKey), `${pattern}: responder knows the initiator`)
    const a = i.split()
    const b = r.split()
    eq(t, b.receive.decrypt(a.send.encrypt(bytes('->'))), bytes('->'))
  }
})

t.test('construction errors are ERR_INVALID_ARGUMENT', async (t) => {
  const s = generateKeyPair()
  const bad: [string, HandshakeOptions][] = [
    ['unknown pattern', { pattern: 'QQ' as PatternName, initiator: true, staticKeyPair: s }],
    ['psk modifier past the last message', { pattern: 'NNpsk3', initiator: true, psks: [rand(32)] }],
    ['XX without a static key', { pattern: 'XX', initiator: true }],
    ['short static key', { pattern: 'XX', initiator: true, staticKeyPair: { publicKey: new Uint8Array(31), secretKey: s.secretKey } }],
    ['IK initiator without the responder key', { pattern: 'IK', initiator: true, staticKeyPair: s }],
    ['XX with a remote static key', { pattern: 'XX', initiator: true, staticKeyPair: s, remoteStaticKey: s.publicKey }],
    ['missing psk', { pattern: 'XXpsk3', initiator: true, staticKeyPair: s }],
    ['short psk', { pattern: 'NNpsk0', initiator: true, psks: [new Uint8Array(16)] }],
    ['bad prologue', { pattern: 'NN', initiator: true, prologue: 'x' as unknown as Uint8Array }],
    ['bad ephemeral', { pattern: 'NN', initiator: true, ephemeralKeyPair: { publicKey: new Uint8Array(1), secretKey: s.secretKey } }],
    ['unknown provider', { pattern: 'NN', initiator: true, crypto: 'webcrypto' as 'node' }],
  ]
  for (const [what, options] of bad) t.equal(thrown(() => createHandshake(options)).code, 'ERR_INVALID_ARGUMENT', what)
  t.equal(thrown(() => createHandshake(null as unknown as HandshakeOptions)).code, 'ERR_INVALID_ARGUMENT')
  t.equal(createHandshake({ pattern: 'NN', initiator: true }).protocolName, 'Noise_NN_25519_ChaChaPoly_SHA256')
})

t.test('provider policy and selection', async (t) => {
  t.equal(getCrypto(), nodeCrypto)
  t.equal(getCrypto('portable'), portableCrypto)
  t.equal(getCrypto(portableCrypto), portableCrypto, 'a provider object is used as is')
  t.equal(thrown(() => getCrypto({} as CryptoProvider)).code, 'ERR_INVALID_ARGUMENT')
  t.equal(toHex(encodeNonce(0x0102030405060708n)), '000000000807060504030201', '4 zero bytes then the LE counter')
  for (const c of [nodeCrypto, portableCrypto]) {
    const key = rand(32)
    const code = (fn: () => unknown) => thrown(fn).code
    t.equal(code(() => c.dh(new Uint8Array(31), rand(32))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.dh(rand(32), new Uint8Array(33))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.aeadSeal(new Uint8Array(16), 0n, new Uint8Array(0), rand(5))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.aeadSeal(key, 0n, 'ad' as unknown as Uint8Array, rand(5))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.aeadSeal(key, 0n, new Uint8Array(0), [1] as unknown as Uint8Array)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.aeadSeal(key, 2n ** 64n, new Uint8Array(0), rand(5))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.aeadOpen(key, 0n, new Uint8Array(0), rand(15))), 'ERR_DECRYPT')
    t.equal(code(() => c.aeadOpen(key, 0n, new Uint8Array(0), rand(600))), 'ERR_DECRYPT', 'large forged ciphertext')
    t.equal(code(() => c.aeadOpen(key, 0n, new Uint8Array(0), 'x' as unknown as Uint8Array)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.hkdf(new Uint8Array(31), rand(32), 2)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.hkdf(rand(32), 'x' as unknown as Uint8Array, 2)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.hkdf(rand(32), rand(32), 4 as 2)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.hmacSha256('k' as unknown as Uint8Array)), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.publicKeyFromSecret!(new Uint8Array(3))), 'ERR_INVALID_ARGUMENT')
    t.equal(code(() => c.randomBytes(-1)), 'ERR_INVALID_ARGUMENT')
    t.equal(c.randomBytes(70000).length, 70000)
    const draws = Array.from({ length: 200 }, (_, k) => c.randomBytes([0, 1, 32, 64, 65][k % 5]!))
    t.same(draws.slice(0, 5).map((d) => d.length), [0, 1, 32, 64, 65])
    const keys = new Set(draws.filter((d) => d.length === 32).map(toHex))
    t.equal(keys.size, 40, `${c.name}: random keys are distinct`)
    const ad = rand(40)
    const sealed = c.aeadSeal(key, 7n, ad, rand(1000))
    t.equal(code(() => c.aeadOpen(key, 7n, rand(40), sealed)), 'ERR_DECRYPT', 'wrong ad, native path')
  }
  t.equal(thrown(() => keyPairFromSecretKey(rand(32), { ...nodeCrypto, publicKeyFromSecret: undefined })).code, 'ERR_INVALID_ARGUMENT')
})

t.test('node backend: key objects are cached by array but never stale', async (t) => {
  const kp = generateKeyPair('node')
  const peer = generateKeyPair('node')
  eq(t, nodeCrypto.dh(kp.secretKey, peer.publicKey), portableCrypto.dh(kp.secretKey, peer.publicKey))
  const other = rand(32)
  kp.secretKey.set(other) // rewritten in place: the cached KeyObject must not be used
  eq(t, nodeCrypto.dh(kp.secretKey, peer.publicKey), portableCrypto.dh(other, peer.publicKey))
  nodeCrypto.releaseKey(kp.secretKey)
  nodeCrypto.releaseKey(rand(32)) // unknown keys are fine
  eq(t, nodeCrypto.dh(kp.secretKey, peer.publicKey), portableCrypto.dh(other, peer.publicKey), 'after release')
  // More keys than the cache holds.
  for (let k = 0; k < 300; k++) nodeCrypto.dh(generateKeyPair('node').secretKey, peer.publicKey)
  eq(t, nodeCrypto.dh(kp.secretKey, peer.publicKey), portableCrypto.dh(other, peer.publicKey), 'after eviction')
  t.equal(nodeCrypto.sha256(rand(200)).length, 32, 'native hash path for large inputs')
})
