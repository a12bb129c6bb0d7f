/**
 * Benchmark: the TPM vault through the project's own TPM client, beside the same operations
 * through `tpm2-tools` processes, in the same run.
 *
 *   npm run bench -- vault
 *   (or: TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/vault.ts)
 *
 * Two private swtpm processes (unix sockets in temp dirs, started as children and stopped by their
 * own PIDs — test/helpers/swtpm.ts): swtpm A serves the vault, swtpm B serves tpm2-tools (swtpm
 * serves one connection at a time, so the vault's open connection and the tools each get their own).
 * The tools reach B through the TCTI the notes recommend, `swtpm:path=B/tpm.sock` (control socket at
 * `tpm.sock.ctrl`).
 *
 * Operations (all ECDSA P-256 / SHA-256, PCRs from the SHA-256 bank):
 * - `sign`:   throughline `vault.sign(handle, 32 B)` (SHA-256 in Node, TPM2_Sign → P1363) vs
 *             `tpm2_sign -c 0x81000010 -g sha256 -o sig msg` (32 B message).
 * - `quote`:  `vault.quote(ak, 32 B nonce, PCRs 0-7,16)` (TPM2_Quote, parse, then TPM2_PCR_Read of the
 *             PCRs and a check of the digest) vs `tpm2_quote -c 0x81000011 -l sha256:0-7,16 -q NONCE -m -s -o -g sha256`
 *             (which also reads the PCRs).
 * - `unseal`: `vault.unseal(blob)` of a 32 B secret sealed under PolicyPCR(16) (StartAuthSession,
 *             PolicyPCR, Unseal) vs `tpm2_unseal -c 0x81000012 -p pcr:sha256:16`.
 * For tpm2-tools the key, AK and sealed object are persistent handles (EvictControl), their fastest
 * path: nothing is loaded per call, and nothing is left loaded on swtpm (which has no resource
 * manager). The vault keeps recently used objects loaded by default (its `keepLoaded`); the
 * `throughline_cold` figures are a vault with `keepLoaded: 0`, which re-loads every object from its
 * blobs (TPM2_Load) and flushes it on every call — the worst case, for reference.
 *
 * Each figure runs for BENCH_MS (default 1000 ms) after a short warm-up, in BENCH_ROUNDS (default 3)
 * rounds; within a round the operations alternate (ours, tools, ours cold) per kind, so that each
 * pair sees the same machine, and each figure reported is its median round (all rounds' ops/s are
 * listed). The machine is shared and noisy: compare figures of one run only. Prints ONE JSON object on
 * stdout (progress on stderr) and writes it to bench/results/vault-<date>.json (unless BENCH_NO_WRITE=1).
 * Timings are never asserted anywhere.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes, verify, createPublicKey } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { TpmVault } from '../src/vault/index.ts'
import { startSwtpm, swtpmAvailable, type Swtpm } from '../test/helpers/swtpm.ts'

const MEASURE_MS = Number(process.env.BENCH_MS ?? 1000)
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))
const WARMUP = 5
const MIN_SAMPLES = 10
const QUOTE_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16]
const SEAL_PCR = 16
const TARGET_RATIO = 20

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (line: string): void => void process.stderr.write(`[bench vault] ${line}\n`)
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d

// every swtpm started here, stopped by its own PID also on a failure
const live = new Set<Swtpm>()
process.on('exit', () => {
  for (const s of live) if (s.pid !== undefined) process.kill(s.pid, 'SIGKILL')
})
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

interface Figure {
  ops_per_sec: number
  median_ms: number
  p90_ms: number
  samples: number
}

function summarise(samples: number[], elapsedMs: number): Figure {
  const s = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))]!
  return { ops_per_sec: round((samples.length * 1000) / elapsedMs, 1), median_ms: round(at(0.5), 3), p90_ms: round(at(0.9), 3), samples: samples.length }
}

/** Runs `op` for MEASURE_MS (at least MIN_SAMPLES times) after WARMUP runs. */
async function measure(op: () => Promise<unknown> | unknown): Promise<Figure> {
  for (let i = 0; i < WARMUP; i++) await op()
  const samples: number[] = []
  const start = performance.now()
  let now = start
  while (now - start < MEASURE_MS || samples.length < MIN_SAMPLES) {
    const t0 = now
    await op()
    now = performance.now()
    samples.push(now - t0)
  }
  return summarise(samples, now - start)
}

// ------------------------------------------------------------------ tpm2-tools

function toolsVersion(): string | undefined {
  const r = spawnSync('tpm2_sign', ['--version'], { encoding: 'utf8' })
  if (r.error !== undefined || r.status !== 0) return undefined
  return /version="([^"]+)"/.exec(r.stdout)?.[1] ?? r.stdout.trim()
}

/** Runs one tpm2 tool against swtpm B; a failure stops the bench with its stderr. */
function tool(env: NodeJS.ProcessEnv, cwd: string, name: string, ...args: string[]): void {
  const r = spawnSync(name, args, { env, cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  if (r.error !== undefined || r.status !== 0) throw new Error(`${name} ${args.join(' ')} failed (${r.status ?? r.error?.message}): ${r.stderr}`)
}

/** Creates the persistent key, AK and PCR-sealed object for the tools on swtpm B. */
async function toolsSetup(swtpm: Swtpm): Promise<{ env: NodeJS.ProcessEnv; cwd: string }> {
  const cwd = await mkdtemp(join(os.tmpdir(), 'tl-bench-tools-'))
  const env = { ...process.env, TPM2TOOLS_TCTI: `swtpm:path=${join(swtpm.dir, 'tpm.sock')}` }
  const run = (name: string, ...args: string[]): void => tool(env, cwd, name, ...args)
  const flush = (): void => run('tpm2_flushcontext', '-t') // no resource manager on swtpm: flush what a tool left
  run('tpm2_createprimary', '-Q', '-C', 'o', '-g', 'sha256', '-G', 'ecc256:aes128cfb', '-c', 'primary.ctx')
  run('tpm2_evictcontrol', '-Q', '-C', 'o', '-c', 'primary.ctx', '0x81000001')
  flush()
  const persist = (attrs: string[], name: string, handle: string): void => {
    run('tpm2_create', '-Q', '-C', '0x81000001', ...attrs, '-u', `${name}.pub`, '-r', `${name}.priv`)
    flush()
    run('tpm2_load', '-Q', '-C', '0x81000001', '-u', `${name}.pub`, '-r', `${name}.priv`, '-c', `${name}.ctx`)
    run('tpm2_evictcontrol', '-Q', '-C', 'o', '-c', `${name}.ctx`, handle)
    flush()
  }
  persist(['-G', 'ecc256:ecdsa-sha256'], 'sign', '0x81000010')
  persist(['-G', 'ecc256:ecdsa-sha256:null', '-a', 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign'], 'ak', '0x81000011')
  run('tpm2_pcrextend', `${SEAL_PCR}:sha256=${'ab'.repeat(32)}`)
  run('tpm2_pcrread', '-Q', '-o', 'pcr.bin', `sha256:${SEAL_PCR}`)
  run('tpm2_createpolicy', '-Q', '--policy-pcr', '-l', `sha256:${SEAL_PCR}`, '-f', 'pcr.bin', '-L', 'policy.digest')
  run('tpm2_flushcontext', '-s') // the trial session createpolicy leaves
  await writeFile(join(cwd, 'secret.bin'), randomBytes(32))
  persist(['-L', 'policy.digest', '-i', 'secret.bin', '-a', 'fixedtpm|fixedparent'], 'seal', '0x81000012')
  await writeFile(join(cwd, 'msg.bin'), randomBytes(32))
  return { env, cwd }
}

// ------------------------------------------------------------------ main

if (!swtpmAvailable()) {
  process.stderr.write('bench vault: swtpm is not installed (apt-get install swtpm swtpm-tools tpm2-tools)\n')
  process.exit(1)
}

const started = new Date()
const version = toolsVersion()
const swtpmVersion = spawnSync('swtpm', ['--version'], { encoding: 'utf8' }).stdout.trim()
log(`swtpm: ${swtpmVersion}; tpm2-tools: ${version ?? 'not installed'}`)

const a = await startSwtpm()
live.add(a)
const b = version === undefined ? undefined : await startSwtpm()
if (b !== undefined) live.add(b)
const vaultDir = await mkdtemp(join(os.tmpdir(), 'tl-bench-vault-'))

const ours: Record<string, Figure> = {}
const cold: Record<string, Figure> = {}
const tools: Record<string, Figure> = {}
let toolsCwd: string | undefined
try {
  // the vault and its keys (swtpm A)
  let vault = await TpmVault.open({ endpoint: a.endpoint, dir: vaultDir })
  const key = await vault.generateSigningKey('p256')
  const ak = await vault.generateAttestationKey()
  await vault.pcrExtend(SEAL_PCR, Buffer.alloc(32, 0xab))
  const blob = await vault.seal(randomBytes(32), { pcrs: [SEAL_PCR] })
  const msg = randomBytes(32)
  const nonce = randomBytes(32)
  // sanity: what we time is correct
  const point = Buffer.from(await vault.signingPublicKey(key))
  const pk = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') }, format: 'jwk' })
  if (!verify('sha256', msg, { key: pk, dsaEncoding: 'ieee-p1363' }, await vault.sign(key, msg))) throw new Error('a vault signature does not verify')
  await vault.quote(ak, nonce, QUOTE_PCRS)
  await vault.unseal(blob)
  await vault.close()

  const setup = b === undefined ? undefined : await toolsSetup(b)
  toolsCwd = setup?.cwd
  const toolOp = (name: string, ...args: string[]) => () => tool(setup!.env, setup!.cwd, name, ...args)
  const toolOps: Record<string, () => void> = {
    sign: toolOp('tpm2_sign', '-Q', '-c', '0x81000010', '-g', 'sha256', '-o', 'sig.bin', 'msg.bin'),
    quote: toolOp('tpm2_quote', '-Q', '-c', '0x81000011', '-l', `sha256:${QUOTE_PCRS.join(',')}`, '-q', nonce.toString('hex'), '-m', 'q.msg', '-s', 'q.sig', '-o', 'q.pcrs', '-g', 'sha256'),
    unseal: toolOp('tpm2_unseal', '-Q', '-c', '0x81000012', '-p', `pcr:sha256:${SEAL_PCR}`, '-o', 'out.bin'),
  }

  const rounds: Record<'ours' | 'cold' | 'tools', Record<string, Figure[]>> = { ours: {}, cold: {}, tools: {} }
  const add = (who: 'ours' | 'cold' | 'tools', kind: string, f: Figure): void => {
    ;(rounds[who][kind] ??= []).push(f)
    log(`  ${who} ${kind}: ${JSON.stringify(f)}`)
  }
  for (let r = 0; r < ROUNDS; r++) {
    log(`round ${r + 1}/${ROUNDS}`)
    for (const kind of ['sign', 'quote', 'unseal'] as const) {
      const op = (v: TpmVault) => (kind === 'sign' ? () => v.sign(key, msg) : kind === 'quote' ? () => v.quote(ak, nonce, QUOTE_PCRS) : () => v.unseal(blob))
      vault = await TpmVault.open({ endpoint: a.endpoint, dir: vaultDir })
      add('ours', kind, await measure(op(vault)))
      await vault.close()
      if (setup !== undefined) add('tools', kind, await measure(toolOps[kind]!))
      vault = await TpmVault.open({ endpoint: a.endpoint, dir: vaultDir, keepLoaded: 0 })
      add('cold', kind, await measure(op(vault)))
      await vault.close()
    }
  }
  // the round with the median ops/s stands for each figure
  const pick = (fs: Figure[]): Figure & { rounds_ops_per_sec: number[] } => {
    const sorted = [...fs].sort((x, y) => x.ops_per_sec - y.ops_per_sec)
    return { ...sorted[Math.floor((sorted.length - 1) / 2)]!, rounds_ops_per_sec: fs.map((f) => f.ops_per_sec) }
  }
  for (const [kind, fs] of Object.entries(rounds.ours)) ours[kind] = pick(fs)
  for (const [kind, fs] of Object.entries(rounds.cold)) cold[kind] = pick(fs)
  for (const [kind, fs] of Object.entries(rounds.tools)) tools[kind] = pick(fs)
  if (b !== undefined) tool({ ...process.env, TPM2TOOLS_TCTI: `swtpm:path=${join(b.dir, 'tpm.sock')}` }, os.tmpdir(), 'tpm2_shutdown', '-c')
} finally {
  for (const s of live) await s.stop()
  live.clear()
  await rm(vaultDir, { recursive: true, force: true })
  if (toolsCwd !== undefined) await rm(toolsCwd, { recursive: true, force: true })
}

const ratio = (x: Figure | undefined, y: Figure | undefined): number | null => (x === undefined || y === undefined ? null : round(x.ops_per_sec / y.ops_per_sec, 1))
const kinds = ['sign', 'quote', 'unseal'] as const
const ratios = Object.fromEntries(kinds.map((k) => [k, ratio(ours[k], tools[k])]))
const ratiosCold = Object.fromEntries(kinds.map((k) => [k, ratio(cold[k], tools[k])]))
const ratiosMedian = Object.fromEntries(kinds.map((k) => [k, ours[k] === undefined || tools[k] === undefined ? null : round(tools[k].median_ms / ours[k].median_ms, 1)]))
const out = {
  bench: 'vault',
  date: started.toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  loadavg_at_start: os.loadavg().map((x) => round(x, 2)),
  swtpm: swtpmVersion,
  tpm2tools: version ?? 'not installed',
  config: {
    measure_ms: MEASURE_MS,
    rounds: ROUNDS,
    warmup_ops: WARMUP,
    quote_pcrs: QUOTE_PCRS,
    seal_pcr: SEAL_PCR,
    tcti: 'swtpm:path=<dir>/tpm.sock',
    transports: 'throughline: its own client over swtpm A unix socket (raw framing, one connection); tpm2-tools: one process per operation on swtpm B',
  },
  units: {
    ops_per_sec: 'operations completed per second, one at a time (median round)',
    median_ms: 'per operation, within that round',
    ratio: 'throughline ops/s ÷ tpm2-tools ops/s; ratios_by_median: tpm2-tools median ms ÷ throughline median ms',
  },
  throughline: ours,
  throughline_cold: { note: 'keepLoaded: 0 — TPM2_Load from blobs and FlushContext on every call', ...cold },
  tpm2tools_ops: version === undefined ? 'not installed' : tools,
  ratios,
  ratios_cold: ratiosCold,
  ratios_by_median: ratiosMedian,
  target: { ratio_vs_tpm2tools: TARGET_RATIO },
  meets_target: Object.fromEntries(kinds.map((k) => [k, ratios[k] === null ? null : ratios[k]! >= TARGET_RATIO])),
}
const json = JSON.stringify(out, null, 2)
process.stdout.write(json + '\n')
if (process.env.BENCH_NO_WRITE !== '1') {
  const dir = join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `vault-${started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`)
  writeFileSync(file, json + '\n')
  log(`wrote ${file}`)
}
process.exit(0)
