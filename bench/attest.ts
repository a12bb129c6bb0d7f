/**
 * Benchmark: what attestation costs a secure channel establishment — full establishments/s with
 * no attestation, with the sim suite (one-way in the handshake, mutual, post-handshake) and with
 * the tpm2 suite over a private swtpm, side by side in one run.
 *
 *   npm run bench -- attest
 *   (or: TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/attest.ts)
 *
 * An establishment is what bench/channel.ts `establishments` measures: `connect()` until the
 * channel is open (Noise XX, Ed25519 software identities on both ends with their key bindings
 * verified, trust policy, attestation, READY), then `close()`; one at a time; both ends in this
 * process over a MemoryTransport on a private MemoryNetwork; `node` crypto provider. Each variant
 * has its own pair of nodes (responder D with a listener `secure`, initiator C):
 * - `none`                no attestation.
 * - `sim`                 C requires `sim` evidence of D in the handshake (D's SimAttester; C's local
 *                         Verifier trusts the sim root, `trustSim: true`, reference values of D's platform).
 * - `sim_mutual`          the same both ways (D requires sim of C, each with its own Verifier).
 * - `sim_post_handshake`  as `sim`, with `mode: 'post-handshake'`: the evidence comes in a gate round
 *                         inside the new channel, after the handshake.
 * - `tpm2`                C requires `tpm2` evidence of D in the handshake: a Tpm2Attester (TPM2_Quote
 *                         by an AK in a TpmVault, measurement log of a synthetic boot) over a private
 *                         swtpm that this bench starts on unix sockets in a temp dir (test/helpers/swtpm.ts,
 *                         shared with the tests) and stops by its PID at the end; C's Verifier pins the
 *                         AK and holds the reference values of MeasurementLog.referenceSet. swtpm shows
 *                         protocol costs, not those of a hardware TPM (tens of ms per quote).
 * Every attested establishment checks that the result is `affirming` (it throws otherwise).
 *
 * The variants run interleaved in the same run so that load from other processes hits all alike:
 * BENCH_ROUNDS rounds; in each, every variant gets BENCH_MS in BENCH_SLICES slices that alternate
 * the order (forward, then reversed, ...). Per variant: the median over the rounds of
 * establishments/s (`perSec`, `msEach`), every round's figure, this process's CPU µs per
 * establishment (and swtpm's, for tpm2), and the ratios to `none` — of the medians
 * (`ratio_to_none`), per round, and the median of the per-round ratios (a variant and `none` of one
 * round ran under the same load). `added_ms_each` = msEach − msEach of none.
 * For context, each round also times BENCH_QUOTES tpm2 quotes as the channel makes them
 * (`Tpm2Attester.attest`: TPM2_Quote and PCR read on swtpm, log delta, encoding) and the local
 * Verifier's appraisal of such evidence (median and p90 ms over all rounds, and per round).
 * Without swtpm (or when it fails), `establishments.tpm2` and `tpm2_quote` are `{ error }` and the
 * other variants still run.
 *
 * Code: src/ under the TypeScript loader (as bench/channel.ts establishments).
 * Prints ONE JSON object on stdout (progress on stderr) and writes it to
 * bench/results/attest-<date>.json (unless BENCH_NO_WRITE=1).
 * Env: BENCH_MS (2000, per variant per round), BENCH_SLICES (2), BENCH_ROUNDS (3),
 * BENCH_WARMUP (30 establishments per variant), BENCH_QUOTES (50 per round), BENCH_VARIANTS
 * (comma-separated subset; `none` is always included).
 * Timings are never asserted anywhere.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SecureChannels, SoftwareIdentity, type AttestationOptions } from '../src/channel/index.ts'
import { Node, parseRoute, silentLogger } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { ReferenceValues, SimAttester, SimPlatform, SimRoot, Verifier, deriveHandle, mintContext, newLogCursor } from '../src/attest/index.ts'
import { MeasurementLog, Tpm2Attester, type BootRecipe } from '../src/attest/tpm2.ts'
import { TpmVault } from '../src/vault/index.ts'
import { startSwtpm, type Swtpm } from '../test/helpers/swtpm.ts'
import { cpuMsOf } from './lib/process.ts'

const MEASURE_MS = Number(process.env.BENCH_MS ?? 2000)
const SLICES = Math.max(1, Number(process.env.BENCH_SLICES ?? 2))
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))
const WARMUP = Math.max(0, Number(process.env.BENCH_WARMUP ?? 30))
const QUOTES = Math.max(1, Number(process.env.BENCH_QUOTES ?? 50))
const ALL_VARIANTS = ['none', 'sim', 'sim_mutual', 'sim_post_handshake', 'tpm2'] as const
type VariantName = (typeof ALL_VARIANTS)[number]
const VARIANTS = [...new Set<VariantName>(['none', ...((process.env.BENCH_VARIANTS?.split(',') ?? ALL_VARIANTS) as VariantName[])])]
for (const v of VARIANTS) if (!ALL_VARIANTS.includes(v)) throw new Error(`unknown variant ${v} (known: ${ALL_VARIANTS.join(', ')})`)

const RECIPE: BootRecipe = { firmware: 'fw-1.4.2', svn: 3, debug: false, bootloader: 'shim-15.8/grub-2.12', secureBoot: 'sb-db-2026-01', app: 'throughline-device-0.1.0' }

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (line: string): void => void process.stderr.write(`[bench attest] ${line}\n`)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!
}

// the swtpm started here, stopped by its own PID also on a failure
let swtpm: Swtpm | undefined
process.on('exit', () => {
  if (swtpm?.pid !== undefined) process.kill(swtpm.pid, 'SIGKILL')
})
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

// ------------------------------------------------------------------ variants

interface Variant {
  name: VariantName
  /** One establishment: connect until open (attestation affirming where required), then close. */
  establish(): Promise<void>
  /** The other process whose CPU the variant uses (swtpm), if any. */
  extraPid?: () => number | undefined
  error?: string
}

const net = new MemoryNetwork()
const nodes: Node[] = []

async function mkNode(name: string): Promise<Node> {
  const node = await new Node({ name, logger: silentLogger }).start()
  const mem = new MemoryTransport(node, { network: net })
  node.addTransport(mem)
  await mem.listen(name, { allow: ['secure'] })
  nodes.push(node)
  return node
}

/**
 * D (responder, listener `secure`) and C (initiator) for one variant; `dNode`/`cNode` are the
 * node-wide attestation options (attesters), `listen` the listener's, `connect` the initiator's.
 */
async function pair(name: VariantName, o: { dNode?: AttestationOptions; listen?: AttestationOptions; cNode?: AttestationOptions; connect?: AttestationOptions }): Promise<Variant> {
  const d = await mkNode(`D-${name}`)
  const dChannels = new SecureChannels(d, { identity: SoftwareIdentity.generate(), crypto: 'node', attestation: o.dNode ?? {} })
  const listener = await dChannels.listen('secure', o.listen === undefined ? {} : { attestation: o.listen })
  listener.on('error', () => {}) // refusals surface at the initiator, which throws
  const c = await mkNode(`C-${name}`)
  const cChannels = new SecureChannels(c, { identity: SoftwareIdentity.generate(), crypto: 'node', attestation: o.cNode ?? {} })
  const route = parseRoute(`/memory/D-${name}/service/secure`)
  const attested = (o.connect?.require ?? []).length > 0
  const options = o.connect === undefined ? {} : { attestation: o.connect }
  return {
    name,
    async establish() {
      const ch = await cChannels.connect(route, options)
      const status = ch.attestation?.status
      ch.close()
      if (attested && status !== 'affirming') throw new Error(`${name}: the channel opened with attestation status ${String(status)}, not affirming (${ch.attestation?.reason ?? ''})`)
    },
  }
}

function simVerifier(simRoot: SimRoot, platform: SimPlatform, id: string): Verifier {
  return new Verifier({ id, trustAnchors: { simRoots: [simRoot.publicKeySpki] }, referenceValues: new ReferenceValues([platform.referenceSet(`${id}-golden`)]), policy: { id: 'bench', trustSim: true } })
}

interface Tpm2Setup {
  vault: TpmVault
  attester: Tpm2Attester
  verifier: Verifier
  vaultDir: string
}

async function setUpTpm2(): Promise<Tpm2Setup> {
  if (spawnSync('swtpm', ['--version'], { stdio: 'ignore' }).status !== 0) throw new Error('swtpm is not installed (apt-get install swtpm swtpm-tools)')
  swtpm = await startSwtpm()
  const vaultDir = await mkdtemp(join(os.tmpdir(), 'tl-bench-attest-vault-'))
  const vault = await TpmVault.open({ endpoint: swtpm.endpoint, dir: vaultDir })
  const eventLog = new MeasurementLog(vault)
  const attester = await Tpm2Attester.create({ vault, eventLog })
  await eventLog.measureBoot(RECIPE)
  const verifier = new Verifier({ id: 'bench-tpm2', trustAnchors: { tpmAks: [await attester.akPublicSpki()] }, referenceValues: new ReferenceValues([eventLog.referenceSet('bench-tpm2-golden')]) })
  return { vault, attester, verifier, vaultDir }
}

/** Times QUOTES quotes as a channel makes them, and the appraisal of each. */
async function timeQuotes(s: Tpm2Setup): Promise<{ quote: number[]; appraise: number[] }> {
  const quote: number[] = []
  const appraise: number[] = []
  for (let i = 0; i < QUOTES; i++) {
    const hPoint = randomBytes(32)
    const staticPub = randomBytes(32)
    const t0 = performance.now()
    const evidence = await s.attester.attest(mintContext('R', 'tpm2', hPoint, staticPub))
    const t1 = performance.now()
    const r = await s.verifier.appraise({ evidence, expectedHandle: deriveHandle('R', 'tpm2', hPoint, staticPub), attesterStaticPub: staticPub, log: newLogCursor() })
    const t2 = performance.now()
    if (r.status !== 'affirming') throw new Error(`tpm2 quote appraised ${r.status} (${r.reason ?? ''}: ${r.detail ?? ''})`)
    quote.push(t1 - t0)
    appraise.push(t2 - t1)
  }
  return { quote, appraise }
}

// ------------------------------------------------------------------ main

const started = new Date()
const swtpmVersion = (() => {
  const r = spawnSync('swtpm', ['--version'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : 'not installed'
})()
const out: Record<string, unknown> = {
  bench: 'attest',
  date: started.toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  loadavg_at_start: os.loadavg().map((x) => round(x, 2)),
  swtpm: swtpmVersion,
  config: {
    variants: VARIANTS,
    rounds: ROUNDS,
    measure_ms_per_variant_per_round: MEASURE_MS,
    slices: SLICES,
    warmup_establishments_per_variant: WARMUP,
    quotes_per_round: QUOTES,
    provider: 'node',
    identities: 'Ed25519 software identities on both ends',
    transport: 'memory (private MemoryNetwork), both ends in this process',
    code: 'src/ under the TypeScript loader',
    tpm2_quoted_pcrs: [0, 1, 4, 7, 10],
  },
  units: {
    perSec: 'secure channels connect()ed until open, then close()d, per second, one at a time (median round)',
    msEach: '1000 / perSec',
    cpu_us_each: 'CPU µs of this process (both channel ends, verifier, vault client) per establishment; swtpm_cpu_us_each: of the swtpm process',
    ratio_to_none: 'perSec of the variant / perSec of none (1 = free, 0.5 = half as many per second)',
    added_ms_each: 'msEach of the variant − msEach of none',
    tpm2_quote: 'ms of one Tpm2Attester.attest on swtpm (TPM2_Quote + PCR read + log delta + encoding)',
    tpm2_appraisal: 'ms of one local Verifier.appraise of that evidence (AK pinned, fresh cursor)',
  },
}

const variants: Variant[] = []
let tpm2: Tpm2Setup | undefined
let tpm2Error: string | undefined
const establishments: Record<string, unknown> = {}
try {
  for (const name of VARIANTS) {
    if (name === 'none') variants.push(await pair('none', {}))
    else if (name === 'sim' || name === 'sim_post_handshake') {
      const simRoot = SimRoot.generate(`bench-root-${name}`)
      const platform = new SimPlatform({ root: simRoot })
      const connect: AttestationOptions = { require: ['sim'], verifier: simVerifier(simRoot, platform, `bench-${name}`) }
      if (name === 'sim_post_handshake') connect.mode = 'post-handshake'
      variants.push(await pair(name, { dNode: { attesters: [new SimAttester(platform)] }, connect }))
    } else if (name === 'sim_mutual') {
      const simRoot = SimRoot.generate('bench-root-mutual')
      const dPlatform = new SimPlatform({ root: simRoot })
      const cPlatform = new SimPlatform({ root: simRoot })
      variants.push(
        await pair(name, {
          dNode: { attesters: [new SimAttester(dPlatform)] },
          listen: { require: ['sim'], verifier: simVerifier(simRoot, cPlatform, 'bench-mutual-of-c') },
          cNode: { attesters: [new SimAttester(cPlatform)] },
          connect: { require: ['sim'], verifier: simVerifier(simRoot, dPlatform, 'bench-mutual-of-d') },
        }),
      )
    } else if (name === 'tpm2') {
      try {
        tpm2 = await setUpTpm2()
        const v = await pair('tpm2', { dNode: { attesters: [tpm2.attester] }, connect: { require: ['tpm2'], verifier: tpm2.verifier } })
        v.extraPid = () => swtpm?.pid
        variants.push(v)
      } catch (e) {
        tpm2Error = String((e as Error)?.message ?? e)
        log(`tpm2: ${tpm2Error}`)
      }
    }
  }

  for (const v of variants) {
    log(`warm-up ${v.name} (${WARMUP})`)
    try {
      for (let i = 0; i < WARMUP; i++) await v.establish()
    } catch (e) {
      v.error = String((e as Error)?.stack ?? e)
      log(`${v.name} failed in the warm-up: ${v.error}`)
    }
  }

  /** Per variant, per round: establishments, wall ms, own CPU ms, swtpm CPU ms. */
  interface Tally {
    n: number
    ms: number
    cpuMs: number
    extraCpuMs: number
  }
  const tallies = new Map<VariantName, Tally[]>(variants.map((v) => [v.name, []]))
  const quoteRounds: number[][] = []
  const appraiseRounds: number[][] = []
  let quoteError: string | undefined

  for (let r = 0; r < ROUNDS; r++) {
    const tally = new Map<VariantName, Tally>(variants.map((v) => [v.name, { n: 0, ms: 0, cpuMs: 0, extraCpuMs: 0 }]))
    for (let i = 0; i < SLICES; i++) {
      const live = variants.filter((v) => v.error === undefined)
      const order = (r * SLICES + i) % 2 === 0 ? live : [...live].reverse()
      for (const v of order) {
        const t = tally.get(v.name)!
        const extra0 = cpuMsOf(v.extraPid?.())
        const cpu0 = process.cpuUsage()
        const t0 = performance.now()
        let el = 0
        try {
          do {
            await v.establish()
            t.n++
            el = performance.now() - t0
          } while (el < MEASURE_MS / SLICES)
        } catch (e) {
          v.error = String((e as Error)?.stack ?? e)
          log(`${v.name} failed in round ${r + 1}: ${v.error}`)
          continue
        }
        const cpu = process.cpuUsage(cpu0)
        t.ms += el
        t.cpuMs += (cpu.user + cpu.system) / 1000
        t.extraCpuMs += cpuMsOf(v.extraPid?.()) - extra0
        await sleep(10) // let the last CLOSE reach the responder
      }
    }
    if (tpm2 !== undefined && quoteError === undefined) {
      try {
        const q = await timeQuotes(tpm2)
        quoteRounds.push(q.quote)
        appraiseRounds.push(q.appraise)
      } catch (e) {
        quoteError = String((e as Error)?.message ?? e)
      }
    }
    const line: string[] = []
    for (const v of variants) {
      const t = tally.get(v.name)!
      tallies.get(v.name)!.push(t)
      line.push(v.error !== undefined ? `${v.name} error` : `${v.name} ${Math.round((t.n * 1000) / t.ms)}/s`)
    }
    if (quoteRounds[r] !== undefined) line.push(`quote ${round(median(quoteRounds[r]!), 3)} ms`)
    log(`round ${r + 1}/${ROUNDS}: ${line.join(', ')}`)
  }

  // ---------------------------------------------------------------- figures
  const rates = (name: VariantName): number[] => tallies.get(name)!.map((t) => (t.ms > 0 ? (t.n * 1000) / t.ms : NaN))
  const noneRates = rates('none')
  const noneMedian = median(noneRates)
  for (const v of variants) {
    if (v.error !== undefined) {
      establishments[v.name] = { error: v.error }
      continue
    }
    const rs = rates(v.name)
    const ts = tallies.get(v.name)!
    const perSec = median(rs)
    const n = ts.reduce((a, t) => a + t.n, 0)
    const entry: Record<string, unknown> = {
      perSec: Math.round(perSec),
      msEach: round(1000 / perSec, 3),
      rounds_perSec: rs.map((x) => Math.round(x)),
      established: n,
      cpu_us_each: round((ts.reduce((a, t) => a + t.cpuMs, 0) * 1000) / n, 1),
    }
    if (v.extraPid !== undefined) entry['swtpm_cpu_us_each'] = round((ts.reduce((a, t) => a + t.extraCpuMs, 0) * 1000) / n, 1)
    if (v.name !== 'none') {
      const perRound = rs.map((x, i) => round(x / noneRates[i]!, 3))
      entry['ratio_to_none'] = round(perSec / noneMedian, 3)
      entry['ratio_to_none_per_round'] = perRound
      entry['ratio_to_none_median_of_rounds'] = round(median(perRound), 3)
      entry['added_ms_each'] = round(1000 / perSec - 1000 / noneMedian, 3)
    }
    establishments[v.name] = entry
  }
  if (tpm2Error !== undefined) establishments['tpm2'] = { error: tpm2Error }
  out['establishments'] = establishments
  out['ratios_to_none'] = Object.fromEntries(
    Object.entries(establishments)
      .filter(([k]) => k !== 'none')
      .map(([k, e]) => [k, (e as { ratio_to_none_median_of_rounds?: number }).ratio_to_none_median_of_rounds ?? null]),
  )
  const summarise = (rounds: number[][]): Record<string, unknown> => {
    const all = rounds.flat()
    return { median_ms: round(median(all), 3), p90_ms: round(quantile(all, 0.9), 3), samples: all.length, rounds_median_ms: rounds.map((x) => round(median(x), 3)) }
  }
  if (VARIANTS.includes('tpm2')) {
    const err = tpm2Error ?? quoteError
    out['tpm2_quote'] = err !== undefined ? { error: err } : summarise(quoteRounds)
    out['tpm2_appraisal'] = err !== undefined ? { error: err } : summarise(appraiseRounds)
  }
} finally {
  for (const n of nodes) await n.stop().catch(() => {})
  if (tpm2 !== undefined) {
    await tpm2.vault.close().catch(() => {})
    await rm(tpm2.vaultDir, { recursive: true, force: true })
  }
  await swtpm?.stop() // CMD_SHUTDOWN, then SIGKILL to its PID; removes its temp dir
}
out['loadavg_at_end'] = os.loadavg().map((x) => round(x, 2))

const json = JSON.stringify(out, null, 2)
process.stdout.write(json + '\n')
if (process.env.BENCH_NO_WRITE !== '1') {
  const dir = join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `attest-${started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`)
  writeFileSync(file, json + '\n')
  log(`wrote ${file}`)
}
process.exit(0)
