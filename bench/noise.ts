/**
 * Benchmark: complete Noise XX handshakes per second in one process (both sides, empty payloads),
 * for our `node` and `portable` providers and for @chainsafe/libp2p-noise's XXHandshakeState
 * (its default crypto) as a peer baseline.
 *
 *   TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/noise.ts
 *
 * Env: BENCH_MS (measuring time per case, default 2000), BENCH_WARMUP_MS (default 500),
 * BENCH_ROUNDS (the cases run interleaved in this many rounds; default 5, the median is reported).
 * Prints ONE JSON object to stdout. `nativeX25519Floor` is the rate of the X25519 work alone
 * (see nativeFloor): the ceiling for any implementation on this machine.
 *
 * Before measuring it cross-validates: a `node` initiator and a `portable` responder complete a
 * handshake and their transport keys match both ways, and both providers produce the same bytes
 * with fixed ephemerals (it throws otherwise). Timings are never asserted anywhere.
 */
import { createPrivateKey, createPublicKey, diffieHellman, randomFillSync, type KeyObject } from 'node:crypto'
import { createHandshake, generateKeyPair, type CryptoSpec, type Handshake, type KeyPair } from '../src/channel/noise.ts'

const MEASURE_MS = Number(process.env.BENCH_MS ?? 2000)
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 500)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const EMPTY = new Uint8Array(0)

function fail(why: string): never {
  throw new Error(`cross-validation failed: ${why}`)
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/** Run the three XX messages between `i` and `r`, with optional payloads; returns the messages. */
function runXX(i: Handshake, r: Handshake, payloads: Uint8Array[] = [EMPTY, EMPTY, EMPTY]): Uint8Array[] {
  const m1 = i.writeMessage(payloads[0]) // -> e
  if (!equal(r.readMessage(m1), payloads[0]!)) fail('payload 1')
  const m2 = r.writeMessage(payloads[1]) // <- e, ee, s, es
  if (!equal(i.readMessage(m2), payloads[1]!)) fail('payload 2')
  const m3 = i.writeMessage(payloads[2]) // -> s, se
  if (!equal(r.readMessage(m3), payloads[2]!)) fail('payload 3')
  return [m1, m2, m3]
}

function crossValidate(): void {
  const enc = new TextEncoder()
  const iStatic = generateKeyPair('node')
  const rStatic = generateKeyPair('portable')
  const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: iStatic, crypto: 'node', prologue: enc.encode('bench') })
  const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: rStatic, crypto: 'portable', prologue: enc.encode('bench') })
  runXX(i, r, [enc.encode('one'), enc.encode('two'), enc.encode('three')])
  if (!i.isComplete() || !r.isComplete()) fail('handshake did not complete')
  if (!equal(i.handshakeHash(), r.handshakeHash())) fail('handshake hashes differ')
  if (!equal(i.remoteStaticKey()!, rStatic.publicKey) || !equal(r.remoteStaticKey()!, iStatic.publicKey)) {
    fail('static keys not learned')
  }
  const a = i.split()
  const b = r.split()
  const x = enc.encode('initiator to responder')
  const y = enc.encode('responder to initiator')
  if (!equal(b.receive.decrypt(a.send.encrypt(x)), x)) fail('k1 differs')
  if (!equal(a.receive.decrypt(b.send.encrypt(y)), y)) fail('k2 differs')

  // Same handshake, fixed ephemerals: both providers must give identical bytes.
  const fixed = (crypto: CryptoSpec, e1: KeyPair, e2: KeyPair): Uint8Array[] => {
    const hi = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: iStatic, ephemeralKeyPair: e1, crypto })
    const hr = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: rStatic, ephemeralKeyPair: e2, crypto })
    return [...runXX(hi, hr), hi.handshakeHash()]
  }
  const e1 = generateKeyPair('portable')
  const e2 = generateKeyPair('node')
  const viaNode = fixed('node', e1, e2)
  const viaPortable = fixed('portable', e1, e2)
  if (!viaNode.every((m, k) => equal(m, viaPortable[k]!))) fail('node and portable bytes differ')
}

interface Result {
  /** Median over the rounds of handshakes per second (wall clock). */
  handshakesPerSec: number
  msPerHandshake: number
  /**
   * Median over the rounds of handshakes per CPU-second of this process (all its threads, GC
   * included): less disturbed than the wall clock when other processes share the cores.
   */
  cpuHandshakesPerSec: number
  /** Wall-clock handshakes per second of each round, in order. */
  rounds: number[]
  handshakes: number
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : Math.round((sorted[mid - 1]! + sorted[mid]!) / 2)
}

/**
 * Measure the cases in interleaved rounds (A B C D A B C D ...) so that load from other
 * processes on this shared machine hits every case alike; each case gets MEASURE_MS in total,
 * after WARMUP_MS of warm-up. Returns the median rate per case.
 */
function measureInterleaved<K extends string>(cases: Record<K, () => void>): Record<K, Result> {
  const names = Object.keys(cases) as K[]
  for (const name of names) {
    const warmEnd = performance.now() + WARMUP_MS
    do cases[name]()
    while (performance.now() < warmEnd)
  }
  const wall = new Map<K, number[]>(names.map((n) => [n, []]))
  const cpu = new Map<K, number[]>(names.map((n) => [n, []]))
  const counts = new Map<K, number>(names.map((n) => [n, 0]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of names) {
      const once = cases[name]
      let n = 0
      const start = performance.now()
      const cpuStart = process.cpuUsage()
      let elapsed = 0
      do {
        once()
        n++
        elapsed = performance.now() - start
      } while (elapsed < MEASURE_MS / ROUNDS)
      const used = process.cpuUsage(cpuStart)
      wall.get(name)!.push(Math.round((n * 1000) / elapsed))
      cpu.get(name)!.push(Math.round((n * 1e6) / (used.user + used.system)))
      counts.set(name, counts.get(name)! + n)
    }
  }
  const out = {} as Record<K, Result>
  for (const name of names) {
    const rate = median(wall.get(name)!)
    out[name] = {
      handshakesPerSec: rate,
      msPerHandshake: Number((1000 / rate).toFixed(3)),
      cpuHandshakesPerSec: median(cpu.get(name)!),
      rounds: wall.get(name)!,
      handshakes: counts.get(name)!,
    }
  }
  return out
}

function ours(crypto: 'node' | 'portable'): () => void {
  const iStatic = generateKeyPair(crypto)
  const rStatic = generateKeyPair(crypto)
  return () => {
    const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: iStatic, crypto })
    const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: rStatic, crypto })
    r.readMessage(i.writeMessage()) // -> e
    i.readMessage(r.writeMessage()) // <- e, ee, s, es
    r.readMessage(i.writeMessage()) // -> s, se
    i.split()
    r.split()
  }
}

/**
 * The physical floor: only the X25519 work of one complete XX handshake through node:crypto's
 * fastest paths (2 keygens by JWK import, 4 peer public-key JWK imports, 6 diffieHellman), no
 * hashing, no AEAD, no engine. No handshake can beat this rate on this machine.
 */
function nativeFloor(): () => void {
  const DUMMY_X = 'A'.repeat(43)
  const jwkPrivate = (d: Uint8Array) =>
    createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.from(d).toString('base64url'), x: DUMMY_X }, format: 'jwk' })
  const jwkPublic = (x: string) => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' })
  const publicX = (k: KeyObject) => createPublicKey(k).export({ format: 'jwk' }).x as string
  const si = jwkPrivate(randomFillSync(new Uint8Array(32)))
  const sr = jwkPrivate(randomFillSync(new Uint8Array(32)))
  const siX = publicX(si)
  const srX = publicX(sr)
  const dh = (privateKey: KeyObject, publicKey: KeyObject) => diffieHellman({ privateKey, publicKey })
  return () => {
    const ei = jwkPrivate(randomFillSync(new Uint8Array(32)))
    const er = jwkPrivate(randomFillSync(new Uint8Array(32)))
    const rRe = jwkPublic(publicX(ei)) // responder: re
    const iRe = jwkPublic(publicX(er)) // initiator: re
    const iRs = jwkPublic(srX) // initiator: rs
    const rRs = jwkPublic(siX) // responder: rs
    dh(er, rRe) // responder ee
    dh(sr, rRe) // responder es
    dh(ei, iRe) // initiator ee
    dh(ei, iRs) // initiator es
    dh(si, iRe) // initiator se
    dh(er, rRs) // responder se
  }
}

/** The parts of @chainsafe/libp2p-noise's internals the baseline uses (not exported by the package). */
interface Libp2pXX {
  writeMessageA(p: Uint8Array): Uint8Array
  writeMessageB(p: Uint8Array): Uint8Array
  writeMessageC(p: Uint8Array): Uint8Array
  readMessageA(m: unknown): unknown
  readMessageB(m: unknown): unknown
  readMessageC(m: unknown): unknown
  ss: { split(): [unknown, unknown] }
}

async function libp2p(): Promise<() => void> {
  const base = import.meta.resolve('@chainsafe/libp2p-noise') // …/dist/src/index.js
  const protocol = (await import(new URL('./protocol.js', base).href)) as {
    XXHandshakeState: new (init: object) => Libp2pXX
  }
  const { wrapCrypto } = (await import(new URL('./crypto.js', base).href)) as { wrapCrypto(c: unknown): unknown }
  const { defaultCrypto } = await import('@chainsafe/libp2p-noise/crypto')
  const { Uint8ArrayList } = await import('uint8arraylist')
  const crypto = wrapCrypto(defaultCrypto)
  const iStatic = defaultCrypto.generateX25519KeyPair()
  const rStatic = defaultCrypto.generateX25519KeyPair()
  const protocolName = 'Noise_XX_25519_ChaChaPoly_SHA256'
  const list = (m: Uint8Array) => new Uint8ArrayList(m)
  return () => {
    const i = new protocol.XXHandshakeState({ crypto, protocolName, initiator: true, prologue: EMPTY, s: iStatic })
    const r = new protocol.XXHandshakeState({ crypto, protocolName, initiator: false, prologue: EMPTY, s: rStatic })
    r.readMessageA(list(i.writeMessageA(EMPTY)))
    i.readMessageB(list(r.writeMessageB(EMPTY)))
    r.readMessageC(list(i.writeMessageC(EMPTY)))
    i.ss.split()
    r.ss.split()
  }
}

crossValidate()
const results = measureInterleaved({ floor: nativeFloor(), node: ours('node'), portable: ours('portable'), libp2p: await libp2p() })
const { floor, node, portable, libp2p: baseline } = results
const json = JSON.stringify({
    bench: 'noise-xx-handshake',
    date: new Date().toISOString(),
    unit: 'complete XX handshakes per second, both sides in one process, empty payloads',
    crossValidated: true,
    node,
    portable,
    libp2pNoise: baseline,
    ratioNodeToLibp2p: Number((node.handshakesPerSec / baseline.handshakesPerSec).toFixed(2)),
    cpuRatioNodeToLibp2p: Number((node.cpuHandshakesPerSec / baseline.cpuHandshakesPerSec).toFixed(2)),
    ratioNodeToPortable: Number((node.handshakesPerSec / portable.handshakesPerSec).toFixed(2)),
    nativeX25519Floor: floor,
    nodeShareOfFloor: Number((node.handshakesPerSec / floor.handshakesPerSec).toFixed(2)),
    measureMs: MEASURE_MS,
    nodeVersion: process.version,
  })
process.stdout.write(json + '\n')
// also kept in bench/results/noise-<date>.json (unless BENCH_NO_WRITE=1, as when bench/channel.ts embeds it)
if (process.env['BENCH_NO_WRITE'] !== '1') {
  const { mkdirSync, writeFileSync } = await import('node:fs')
  const dir = new URL('./results/', import.meta.url)
  mkdirSync(dir, { recursive: true })
  writeFileSync(new URL(`noise-${new Date().toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`, dir), json + '\n')
}
