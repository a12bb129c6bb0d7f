/**
 * Benchmark: throughline over TCP, direct and through one relay hop, side by side with raw
 * node:net baselines measured in the same run.
 *
 *   npm run bench -- relay
 *   (or: TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/relay.ts, with dist/ built)
 *
 * Scenarios (every hop a separate process on 127.0.0.1, ports picked by the OS):
 * - `raw.direct`          raw framed client (this process) → raw sink process (bench/lib/raw-sink.js)
 * - `raw.proxy`           raw client → raw proxy process (bench/lib/raw-proxy.js: parses every frame,
 *                         one write per frame, cork per chunk) → raw sink process
 * - `throughline.direct`  throughline Node (this process) → throughline sink Node process (bench/lib/tl-sink.ts)
 * - `throughline.relay`   throughline Node → relay node (the real CLI: `bin/throughline.js node start`)
 *                         → sink Node registered at the relay with a RelayClient → `sink` worker
 * - `throughline.relay_nocopy`  the same with the relay started with `--tcp-coalesce-max 0`: it
 *                         copies no payload (each frame costs it two socket writes instead of a
 *                         share of one batched write per turn) — what strict zero-copy costs
 *
 * For 64 B and 64 KiB payloads: messages/s and MB/s (payload bytes, 10^6) counted AT THE SINK over
 * BENCH_MS after BENCH_WARMUP_MS of warm-up; the senders respect backpressure (they stop writing
 * while the socket holds more than BENCH_HIGH_WATER bytes and wait for 'drain'). Plus 64 B
 * request/response RTT (median, p99) for every scenario, and the CPU each process used (share of one
 * core) while measuring, so a gap can be explained: `cpu_us_per_msg` per process, their sum
 * `pipeline_cpu_us_per_msg`, and `cpu_bound_msgps` = cores × 10^6 / that sum, the rate the pipeline's
 * CPU cost allows when its processes share the machine's cores (a view less sensitive to other load
 * than the measured rate). Each round runs all scenarios, each throughline scenario right after its
 * baseline; figures are the median over BENCH_ROUNDS rounds (all samples are in the output).
 *
 * Baseline details: the raw client pre-builds its frames and writes them batched into ~64 KiB
 * writes; the raw sink hands every frame on as one contiguous buffer (a view, or its pieces gathered
 * once), as the router's FrameDecoder does; the raw proxy writes each frame on zero-copy.
 * `ratios.relay_vs_rawproxy_*` compare throughline.relay with raw.proxy (targets: ≥ 0.70 for MB/s at
 * 64 KiB, ≥ 0.50 for msgs/s at 64 B).
 *
 * Prints ONE JSON object on stdout (progress on stderr) and writes it to bench/results/relay-<date>.json.
 * Env: BENCH_MS (3000), BENCH_WARMUP_MS (1000), BENCH_ROUNDS (3), BENCH_RTT_COUNT (2000),
 * BENCH_HIGH_WATER (1048576), BENCH_ONLY (comma-separated scenario names), BENCH_SIZES (64,65536),
 * BENCH_NO_WRITE=1 (do not write the results file), BENCH_RELAY_NODE_ARGS / BENCH_SINK_NODE_ARGS (extra node
 * arguments for the relay CLI / the forked sink and proxy processes, space-separated, e.g. `--cpu-prof --cpu-prof-dir=prof`).
 * Timings are never asserted anywhere.
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Node, parseRoute } from '../src/router/index.ts'
import { TcpTransport, type TcpLink } from '../src/transports/index.ts'
import { MarkedChild, cpuMsOf, spawnRelayCli, waitReady } from './lib/process.ts'

const MEASURE_MS = Number(process.env.BENCH_MS ?? 3000)
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1000)
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))
const RTT_COUNT = Number(process.env.BENCH_RTT_COUNT ?? 2000)
const RTT_WARMUP = Math.min(500, Math.ceil(RTT_COUNT / 4))
const HIGH_WATER = Number(process.env.BENCH_HIGH_WATER ?? 1024 * 1024)
const SIZES = (process.env.BENCH_SIZES ?? '64,65536').split(',').map(Number)
// run order: each throughline scenario right after its baseline, so that each pair sees the same machine
const ALL_SCENARIOS = ['raw.direct', 'throughline.direct', 'raw.proxy', 'throughline.relay', 'throughline.relay_nocopy'] as const
type Scenario = (typeof ALL_SCENARIOS)[number]
const SCENARIOS = (process.env.BENCH_ONLY?.split(',') ?? [...ALL_SCENARIOS]) as Scenario[]
for (const s of SCENARIOS) if (!ALL_SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s} (known: ${ALL_SCENARIOS.join(', ')})`)

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const lib = join(root, 'bench', 'lib')
const TS_LOADER = ['--import', '@tapjs/typescript/import']
const nodeArgs = (v: string | undefined): string[] => (v ?? '').split(' ').filter((x) => x !== '')
const RELAY_NODE_ARGS = nodeArgs(process.env.BENCH_RELAY_NODE_ARGS)
const SINK_NODE_ARGS = nodeArgs(process.env.BENCH_SINK_NODE_ARGS)

const log = (line: string): void => void process.stderr.write(`[bench relay] ${line}\n`)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const sizeKey = (size: number): string => (size >= 1024 && size % 1024 === 0 ? `${size / 1024}KiB` : `${size}B`)

// ------------------------------------------------------------------ child processes

interface Mark {
  msgs: number
  bytes: number
  t: number
  drops?: number
}

function rssMBOf(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? NaN : Math.round(Number(m[1]) / 1024)
  } catch {
    return NaN
  }
}

/** A bench child process that answers `mark` requests. */
type Child = MarkedChild<Mark>

/** Starts a script with an IPC channel and waits for its `ready` message. */
async function forkChild(name: string, script: string, args: string[], ts: boolean): Promise<{ child: Child; ready: Record<string, unknown> }> {
  const proc = fork(script, args, {
    cwd: root,
    execArgv: [...(ts ? TS_LOADER : []), ...SINK_NODE_ARGS],
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const child = new MarkedChild<Mark>(name, proc, log)
  return { child, ready: await waitReady<Record<string, unknown>>(proc, name) }
}

/** The relay node: the real CLI, `node bin/throughline.js node start --tcp 127.0.0.1:0 [cliArgs]`. */
async function startRelayCli(cliArgs: string[] = []): Promise<{ child: Child; address: string }> {
  let child: Child | undefined
  const { address } = await spawnRelayCli(root, RELAY_NODE_ARGS, (proc) => (child = new MarkedChild<Mark>('relay (CLI)', proc, log)), cliArgs)
  return { child: child!, address }
}

// ------------------------------------------------------------------ senders (in this process)

interface Sender {
  stop(): Promise<void>
}

/** Raw framed client: pre-built frames, batched into ~64 KiB writes, corked per turn, honours 'drain'. */
async function rawSender(port: number, size: number): Promise<Sender> {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
  await once(socket, 'connect')
  const frame = Buffer.alloc(4 + size)
  frame.writeUInt32BE(size, 0)
  randomBytes(size).copy(frame, 4)
  const perBatch = Math.max(1, Math.floor(65536 / frame.length))
  const batch = perBatch === 1 ? frame : Buffer.concat(new Array<Buffer>(perBatch).fill(frame))
  let running = true
  const pump = (): void => {
    if (!running) return
    socket.cork()
    while (socket.writableLength < HIGH_WATER) socket.write(batch)
    socket.uncork()
    if (socket.writableNeedDrain) socket.once('drain', pump)
    else setImmediate(pump)
  }
  socket.on('error', () => {})
  pump()
  return {
    async stop() {
      running = false
      socket.destroy()
    },
  }
}

/**
 * throughline sender: one Node, fire-and-forget `node.send()`; per event-loop turn it sends until
 * the connection's socket holds HIGH_WATER bytes, then waits for 'drain'.
 */
async function tlSender(firstHop: string, routeText: string, size: number): Promise<Sender & { node: Node }> {
  const node = await new Node({ name: 'bench-sender' }).start()
  const tcp = new TcpTransport(node)
  node.addTransport(tcp)
  const conn = await tcp.connect(firstHop)
  const socket = (conn.link as TcpLink).socket
  const route = parseRoute(routeText)
  const payload = randomBytes(size)
  const burst = Math.max(4, Math.ceil(HIGH_WATER / (size + 48)))
  let running = true
  const pump = (): void => {
    if (!running) return
    for (let n = 0; n < burst && socket.writableLength < HIGH_WATER; n++) node.send(route, payload)
    if (socket.writableLength >= HIGH_WATER) socket.once('drain', pump)
    else setImmediate(pump)
  }
  pump()
  return {
    node,
    async stop() {
      running = false
      if (node.dropCount() > 0) log(`sender drops: ${JSON.stringify(node.stats.drops)}`)
      await node.stop()
    },
  }
}

// ------------------------------------------------------------------ measurements

interface Throughput {
  msgps: number
  MBps: number
  /** Share of one core each process used while measuring. */
  cpu: Record<string, number>
  /** CPU time (µs) each process spent per message delivered (the cost that competes for the 2 cores). */
  cpu_us_per_msg: Record<string, number>
  /** Sum of cpu_us_per_msg over the processes of the pipeline. */
  pipeline_cpu_us_per_msg: number
  /** The rate the pipeline's CPU cost alone allows on this machine's cores: cores × 10^6 / pipeline_cpu_us_per_msg. */
  cpu_bound_msgps: number
  /** Resident memory (MB) of the child processes at the end of the measurement. */
  rss_MB: Record<string, number>
  sink_drops?: number
}

async function quiesce(sink: Child): Promise<void> {
  let last = -1
  for (let i = 0; i < 100; i++) {
    const m = await sink.mark()
    if (m.msgs === last) return
    last = m.msgs
    await sleep(100)
  }
}

async function measureThroughput(sink: Child, procs: Child[], start: () => Promise<Sender>): Promise<Throughput> {
  const sender = await start()
  await sleep(WARMUP_MS)
  const cpu0 = procs.map((c) => cpuMsOf(c.pid))
  const self0 = process.cpuUsage()
  const m0 = await sink.mark()
  await sleep(MEASURE_MS)
  const m1 = await sink.mark()
  const self1 = process.cpuUsage(self0)
  const cpu1 = procs.map((c) => cpuMsOf(c.pid))
  const rss = Object.fromEntries(procs.map((c) => [c.name, rssMBOf(c.pid)]))
  await sender.stop()
  await quiesce(sink)
  const secs = (m1.t - m0.t) / 1000
  const wall = m1.t - m0.t
  const msgs = m1.msgs - m0.msgs
  const cpu: Record<string, number> = { 'sender (bench process)': round((self1.user + self1.system) / 1000 / wall, 2) }
  const cpuUs: Record<string, number> = { 'sender (bench process)': round((self1.user + self1.system) / Math.max(1, msgs), 2) }
  procs.forEach((c, i) => {
    cpu[c.name] = round((cpu1[i]! - cpu0[i]!) / wall, 2)
    cpuUs[c.name] = round(((cpu1[i]! - cpu0[i]!) * 1000) / Math.max(1, msgs), 2)
  })
  const pipeline = round(Object.values(cpuUs).reduce((a, b) => a + b, 0), 2)
  const out: Throughput = {
    msgps: Math.round(msgs / secs),
    MBps: round((m1.bytes - m0.bytes) / secs / 1e6, 1),
    cpu,
    cpu_us_per_msg: cpuUs,
    pipeline_cpu_us_per_msg: pipeline,
    cpu_bound_msgps: pipeline > 0 ? Math.round((os.availableParallelism() * 1e6) / pipeline) : 0,
    rss_MB: rss,
  }
  if (m1.drops !== undefined) out.sink_drops = m1.drops
  return out
}

interface Rtt {
  median_us: number
  p99_us: number
}

function summarise(samples: number[]): Rtt {
  samples.sort((a, b) => a - b)
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!
  return { median_us: round(at(0.5), 1), p99_us: round(at(0.99), 1) }
}

/** Raw ping-pong: one 64 B frame out, wait for the echoed frame, repeat. */
async function rawRtt(port: number): Promise<Rtt> {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
  await once(socket, 'connect')
  const frame = Buffer.alloc(4 + 64)
  frame.writeUInt32BE(64, 0)
  let got = 0
  let wake: (() => void) | undefined
  socket.on('data', (d: Buffer) => {
    got += d.length
    if (got >= frame.length) {
      got -= frame.length
      wake?.()
    }
  })
  const ping = (): Promise<void> =>
    new Promise((resolve) => {
      wake = resolve
      socket.write(frame)
    })
  const samples: number[] = []
  for (let i = 0; i < RTT_WARMUP + RTT_COUNT; i++) {
    const t0 = process.hrtime.bigint()
    await ping()
    if (i >= RTT_WARMUP) samples.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  socket.destroy()
  return summarise(samples)
}

/** throughline request/response: `node.request()` of a 64 B payload, one at a time. */
async function tlRtt(firstHop: string, routeText: string): Promise<Rtt> {
  const node = await new Node({ name: 'bench-rtt' }).start()
  const tcp = new TcpTransport(node)
  node.addTransport(tcp)
  await tcp.connect(firstHop)
  const route = parseRoute(routeText)
  const payload = randomBytes(64)
  const samples: number[] = []
  for (let i = 0; i < RTT_WARMUP + RTT_COUNT; i++) {
    const t0 = process.hrtime.bigint()
    const reply = await node.request(route, payload, { timeout: 5000 })
    if (i >= RTT_WARMUP) samples.push(Number(process.hrtime.bigint() - t0) / 1000)
    if (reply.payload.length !== 64) throw new Error('echo reply has the wrong length')
  }
  await node.stop()
  return summarise(samples)
}

function round(x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

// ------------------------------------------------------------------ scenarios

interface ScenarioResult {
  throughput: Record<string, Throughput>
  rtt: Rtt
}

async function runScenario(s: Scenario): Promise<ScenarioResult> {
  const children: Child[] = []
  const throughput: Record<string, Throughput> = {}
  try {
    if (s === 'raw.direct' || s === 'raw.proxy') {
      const { child: sink, ready } = await forkChild('sink', join(lib, 'raw-sink.js'), ['count'], false)
      children.push(sink)
      const { child: echo, ready: echoReady } = await forkChild('echo', join(lib, 'raw-sink.js'), ['echo'], false)
      children.push(echo)
      let port = ready['port'] as number
      let echoPort = echoReady['port'] as number
      let procs = [sink]
      if (s === 'raw.proxy') {
        const { child: proxy, ready: pr } = await forkChild('proxy', join(lib, 'raw-proxy.js'), [String(port)], false)
        const { child: proxy2, ready: pr2 } = await forkChild('echo proxy', join(lib, 'raw-proxy.js'), [String(echoPort)], false)
        children.push(proxy, proxy2)
        port = pr['port'] as number
        echoPort = pr2['port'] as number
        procs = [proxy, sink]
      }
      for (const size of SIZES) throughput[sizeKey(size)] = await measureThroughput(sink, procs, () => rawSender(port, size))
      return { throughput, rtt: await rawRtt(echoPort) }
    }
    if (s === 'throughline.direct') {
      const { child: sink, ready } = await forkChild('sink', join(lib, 'tl-sink.ts'), ['listen'], true)
      children.push(sink)
      const addr = ready['address'] as string
      for (const size of SIZES) {
        throughput[sizeKey(size)] = await measureThroughput(sink, [sink], () => tlSender(addr, `/tcp/${addr}/service/sink`, size))
      }
      return { throughput, rtt: await tlRtt(addr, `/tcp/${addr}/service/echo`) }
    }
    // throughline.relay, throughline.relay_nocopy
    const relay = await startRelayCli(s === 'throughline.relay_nocopy' ? ['--tcp-coalesce-max', '0'] : [])
    children.push(relay.child)
    const R = relay.address
    const { child: sink } = await forkChild('sink', join(lib, 'tl-sink.ts'), ['relay', R, 'benchsink'], true)
    children.push(sink)
    const via = `/tcp/${R}/service/forward_to_benchsink`
    for (const size of SIZES) {
      throughput[sizeKey(size)] = await measureThroughput(sink, [relay.child, sink], () => tlSender(R, `${via}/service/sink`, size))
    }
    return { throughput, rtt: await tlRtt(R, `${via}/service/echo`) }
  } finally {
    await Promise.all(children.map((c) => c.stop()))
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

// ------------------------------------------------------------------ main

const rounds: Partial<Record<Scenario, ScenarioResult>>[] = []
for (let r = 0; r < ROUNDS; r++) {
  const round_: Partial<Record<Scenario, ScenarioResult>> = {}
  for (const s of SCENARIOS) {
    log(`round ${r + 1}/${ROUNDS}: ${s}`)
    const res = await runScenario(s)
    round_[s] = res
    const parts = Object.entries(res.throughput).map(([k, v]) => `${k}: ${v.msgps.toLocaleString('en')} msgs/s ${v.MBps} MB/s cpu ${JSON.stringify(v.cpu)} µs/msg ${JSON.stringify(v.cpu_us_per_msg)}`)
    log(`  ${parts.join(' | ')} | rtt median ${res.rtt.median_us} µs p99 ${res.rtt.p99_us} µs`)
  }
  rounds.push(round_)
}

const results: Record<string, Record<string, unknown>> = {}
const rtt: Record<string, Rtt & { samples_median_us: number[] }> = {}
for (const s of SCENARIOS) {
  const per = rounds.map((r) => r[s]!)
  const entry: Record<string, unknown> = {}
  for (const size of SIZES) {
    const k = sizeKey(size)
    const samples = per.map((p) => p.throughput[k]!)
    // the round whose msgs/s is the median stands for the per-process CPU and memory figures
    const mid = [...samples].sort((a, b) => a.msgps - b.msgps)[samples.length >> 1]!
    entry[k] = {
      msgps: Math.round(median(samples.map((x) => x.msgps))),
      MBps: round(median(samples.map((x) => x.MBps)), 1),
      samples_msgps: samples.map((x) => x.msgps),
      cpu: mid.cpu,
      cpu_us_per_msg: mid.cpu_us_per_msg,
      pipeline_cpu_us_per_msg: round(median(samples.map((x) => x.pipeline_cpu_us_per_msg)), 2),
      cpu_bound_msgps: Math.round(median(samples.map((x) => x.cpu_bound_msgps))),
      rss_MB: mid.rss_MB,
      ...(mid.sink_drops !== undefined ? { sink_drops: mid.sink_drops } : {}),
    }
  }
  results[s] = entry
  rtt[s] = {
    median_us: round(median(per.map((p) => p.rtt.median_us)), 1),
    p99_us: round(median(per.map((p) => p.rtt.p99_us)), 1),
    samples_median_us: per.map((p) => p.rtt.median_us),
  }
}

type Cell = { msgps: number; MBps: number; cpu_bound_msgps: number }
const cell = (s: Scenario, size: number): Cell | undefined => results[s]?.[sizeKey(size)] as Cell | undefined
const ratio = (a: number | undefined, b: number | undefined): number | null => (a === undefined || b === undefined || b === 0 ? null : round(a / b, 3))
const perRound = (a: Scenario, b: Scenario, size: number, f: 'msgps' | 'MBps'): (number | null)[] =>
  rounds.map((r) => ratio(r[a]?.throughput[sizeKey(size)]?.[f], r[b]?.throughput[sizeKey(size)]?.[f]))

const ratios = {
  relay_vs_rawproxy_MBps_64KiB: ratio(cell('throughline.relay', 65536)?.MBps, cell('raw.proxy', 65536)?.MBps),
  relay_vs_rawproxy_msgps_64B: ratio(cell('throughline.relay', 64)?.msgps, cell('raw.proxy', 64)?.msgps),
  relay_nocopy_vs_rawproxy_MBps_64KiB: ratio(cell('throughline.relay_nocopy', 65536)?.MBps, cell('raw.proxy', 65536)?.MBps),
  relay_nocopy_vs_rawproxy_msgps_64B: ratio(cell('throughline.relay_nocopy', 64)?.msgps, cell('raw.proxy', 64)?.msgps),
  direct_vs_rawdirect_MBps_64KiB: ratio(cell('throughline.direct', 65536)?.MBps, cell('raw.direct', 65536)?.MBps),
  direct_vs_rawdirect_msgps_64B: ratio(cell('throughline.direct', 64)?.msgps, cell('raw.direct', 64)?.msgps),
  relay_vs_direct_MBps_64KiB: ratio(cell('throughline.relay', 65536)?.MBps, cell('throughline.direct', 65536)?.MBps),
  relay_vs_direct_msgps_64B: ratio(cell('throughline.relay', 64)?.msgps, cell('throughline.direct', 64)?.msgps),
  rtt_relay_vs_direct: ratio(rtt['throughline.relay']?.median_us, rtt['throughline.direct']?.median_us),
  // the same comparison by CPU cost per message (less sensitive to other load on the machine)
  relay_vs_rawproxy_cpu_bound_64KiB: ratio(cell('throughline.relay', 65536)?.cpu_bound_msgps, cell('raw.proxy', 65536)?.cpu_bound_msgps),
  relay_vs_rawproxy_cpu_bound_64B: ratio(cell('throughline.relay', 64)?.cpu_bound_msgps, cell('raw.proxy', 64)?.cpu_bound_msgps),
}
const targets = { relay_vs_rawproxy_MBps_64KiB: 0.7, relay_vs_rawproxy_msgps_64B: 0.5 }
const out = {
  bench: 'relay',
  date: new Date().toISOString(),
  node: process.version,
  cpus: os.availableParallelism(),
  config: { measure_ms: MEASURE_MS, warmup_ms: WARMUP_MS, rounds: ROUNDS, rtt_count: RTT_COUNT, sender_high_water_bytes: HIGH_WATER, sizes: SIZES },
  units: { msgps: 'messages/s counted at the sink', MBps: 'payload bytes/s at the sink, 10^6', rtt: 'µs, 64 B request/response', cpu: 'share of one core while measuring', cpu_us_per_msg: 'CPU µs per message delivered, per process', cpu_bound_msgps: 'cores × 10^6 / the summed CPU µs per message of the pipeline (the rate its CPU cost allows when its processes share the cores)' },
  results,
  rtt_us: rtt,
  ratios,
  ratios_per_round: {
    relay_vs_rawproxy_MBps_64KiB: perRound('throughline.relay', 'raw.proxy', 65536, 'MBps'),
    relay_vs_rawproxy_msgps_64B: perRound('throughline.relay', 'raw.proxy', 64, 'msgps'),
  },
  targets,
  meets_targets: {
    relay_vs_rawproxy_MBps_64KiB: ratios.relay_vs_rawproxy_MBps_64KiB === null ? null : ratios.relay_vs_rawproxy_MBps_64KiB >= targets.relay_vs_rawproxy_MBps_64KiB,
    relay_vs_rawproxy_msgps_64B: ratios.relay_vs_rawproxy_msgps_64B === null ? null : ratios.relay_vs_rawproxy_msgps_64B >= targets.relay_vs_rawproxy_msgps_64B,
  },
}
const json = JSON.stringify(out, null, 2)
process.stdout.write(json + '\n')
if (process.env.BENCH_NO_WRITE !== '1') {
  const dir = join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `relay-${out.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`)
  writeFileSync(file, json + '\n')
  log(`wrote ${file}`)
}
process.exit(0)
