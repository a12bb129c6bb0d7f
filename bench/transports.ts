/**
 * Benchmark: one throughline hop over each transport, side by side in the same run.
 *
 *   npm run bench -- transports
 *   (or: TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/transports.ts, with dist/ built)
 *
 * A throughline sender Node (this process) → a throughline sink Node (a separate process,
 * bench/lib/tl-transport-sink.ts, whose `sink` worker counts messages and payload bytes) over:
 * - `tcp`     TCP on 127.0.0.1 (port picked by the OS),
 * - `ws`      WebSocket (ws://) on 127.0.0.1, `perMessageDeflate: false` on both ends (the transport's own setting),
 * - `serial`  the serial transport (COBS + CRC-32C framing, default MTU 256) over a socat pty pair
 *             (bench/lib/pty.ts): the sink listens on one end, the sender dials the other. A pty ignores
 *             the baud rate, so this measures the framing and the pty, not a line speed.
 *
 * For each: messages/s and MB/s (payload bytes, 10^6) counted AT THE SINK over BENCH_MS after
 * BENCH_WARMUP_MS of warm-up, for 64 B and 64 KiB payloads; serial also 16 KiB (BENCH_SERIAL_SIZES,
 * default 64 B, 16 KiB, 64 KiB: the framing runs at some 15-40 MB/s, so a 64 KiB window counts only
 * a few hundred messages per second, still about a thousand per window). Fire-and-forget
 * `node.send()`; the sender respects backpressure as each link reports it:
 * - tcp: the link's socket (`TcpLink.socket`): stop while `writableLength` ≥ BENCH_HIGH_WATER, wait for 'drain';
 * - ws: the WebSocketLink: stop while `ws.bufferedAmount` (the socket's queue, what `writeFrame`
 *   compares with its 1 MiB high-water mark) ≥ BENCH_HIGH_WATER, wait for the socket's 'drain'
 *   (which is when the link itself calls `onDrain`);
 * - serial: the serialport stream (captured through the transport's `openPort` option): stop while
 *   its `writableLength` ≥ BENCH_HIGH_WATER (`write()` returned false long before), wait for 'drain'.
 * Also the CPU each process used while measuring (share of one core, µs per message), and
 * `cpu_bound_msgps` = cores × 10^6 / (sender + sink µs per message), a view of the cost that is
 * less sensitive to other load on the machine than the measured rate.
 *
 * Each round runs every transport in turn (tcp right before ws, so their ratio compares
 * neighbours in time); the figures are the median over BENCH_ROUNDS rounds (all samples are in the
 * output). `ratios.ws_vs_tcp_MBps_64KiB` (target ≥ 0.70) and `ratios.ws_vs_tcp_msgps_64B` are
 * the medians' ratios; the per-round ratios and their median (`ratios_round_median`) are given too.
 *
 * Prints ONE JSON object on stdout (progress on stderr) and writes it to bench/results/transports-<date>.json.
 * Env: BENCH_MS (3000), BENCH_WARMUP_MS (1000), BENCH_ROUNDS (3), BENCH_HIGH_WATER (1048576),
 * BENCH_SIZES (64,65536; tcp and ws), BENCH_SERIAL_SIZES (64,16384,65536), BENCH_SERIAL_MTU (the
 * transport default), BENCH_ONLY (comma-separated: tcp,ws,serial), BENCH_NO_WRITE=1 (no results
 * file), BENCH_SINK_NODE_ARGS (extra node arguments for the sink processes, space-separated, e.g.
 * `--cpu-prof --cpu-prof-dir=prof`). Timings are never asserted anywhere.
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import type { Duplex } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { Node, parseRoute } from '../src/router/index.ts'
import type { SerialTransportOptions } from '../src/transports/serial.ts'
import type { TcpLink } from '../src/transports/tcp.ts'
import type { WebSocketLink } from '../src/transports/websocket.ts'
import { ptyPair, type PtyPair } from './lib/pty.ts'
import { MarkedChild, cpuMsOf, trackChild, waitReady } from './lib/process.ts'

const MEASURE_MS = Number(process.env.BENCH_MS ?? 3000)
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1000)
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))
const HIGH_WATER = Number(process.env.BENCH_HIGH_WATER ?? 1024 * 1024)
const SIZES = (process.env.BENCH_SIZES ?? '64,65536').split(',').map(Number)
const SERIAL_SIZES = (process.env.BENCH_SERIAL_SIZES ?? '64,16384,65536').split(',').map(Number)
const SERIAL_MTU = process.env.BENCH_SERIAL_MTU !== undefined ? Number(process.env.BENCH_SERIAL_MTU) : undefined
const ALL = ['tcp', 'ws', 'serial'] as const
type Kind = (typeof ALL)[number]
const KINDS = (process.env.BENCH_ONLY?.split(',') ?? [...ALL]) as Kind[]
for (const k of KINDS) if (!ALL.includes(k)) throw new Error(`unknown transport ${k} (known: ${ALL.join(', ')})`)
const sizesOf = (k: Kind): number[] => (k === 'serial' ? SERIAL_SIZES : SIZES)

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const SINK = join(root, 'bench', 'lib', 'tl-transport-sink.ts')
const TS_LOADER = ['--import', '@tapjs/typescript/import']
const SINK_NODE_ARGS = (process.env.BENCH_SINK_NODE_ARGS ?? '').split(' ').filter((x) => x !== '')

const log = (line: string): void => void process.stderr.write(`[bench transports] ${line}\n`)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const sizeKey = (size: number): string => (size >= 1024 && size % 1024 === 0 ? `${size / 1024}KiB` : `${size}B`)
const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits

// ------------------------------------------------------------------ child processes

/** Temporary directories of the pty links, removed also on failure. (Children: bench/lib/process.ts trackChild.) */
const tempDirs = new Set<string>()
process.on('exit', () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true })
})

interface Mark {
  msgs: number
  bytes: number
  t: number
  drops: number
}

/** The sink process: a Node listening on one transport with a counting `sink` worker. */
type Sink = MarkedChild<Mark> & { readonly address: string }

/** Starts a sink (`args`: transport and address) and waits for its `ready`, which names the address it listens on. */
async function startSink(args: string[]): Promise<Sink> {
  const proc = fork(SINK, args, {
    cwd: root,
    execArgv: [...TS_LOADER, ...SINK_NODE_ARGS],
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  // a mark still pending when the sink dies resolves with NaNs (the figure is then NaN, not a hang)
  const child = new MarkedChild<Mark>('sink', proc, log, { msgs: NaN, bytes: NaN, t: NaN, drops: NaN })
  const { address } = await waitReady<{ address: string }>(proc, `sink ${args.join(' ')}`)
  return Object.assign(child, { address })
}

// ------------------------------------------------------------------ senders (in this process)

interface Sender {
  stop(): Promise<void>
}

/** How a link's fullness is watched: is it over the high-water mark, and how to wait until it is not. */
interface Gauge {
  full(): boolean
  onDrain(f: () => void): void
}

/**
 * One sender Node over `kind`, fire-and-forget `node.send()`: per event-loop turn it sends until
 * the link reports BENCH_HIGH_WATER bytes queued, then waits for the link's 'drain'.
 */
async function startSender(kind: Kind, sinkAddress: string, size: number, serialPath?: string): Promise<Sender> {
  const node = await new Node({ name: `bench-sender-${kind}` }).start()
  let gauge: Gauge
  let routeText: string
  // each transport's own module, loaded when used
  if (kind === 'tcp') {
    const { TcpTransport } = await import('../src/transports/tcp.ts')
    const tcp = new TcpTransport(node)
    node.addTransport(tcp)
    const socket = ((await tcp.connect(sinkAddress)).link as TcpLink).socket
    gauge = { full: () => socket.writableLength >= HIGH_WATER, onDrain: (f) => socket.once('drain', f) }
    routeText = `/tcp/${sinkAddress}/service/sink`
  } else if (kind === 'ws') {
    const { WebSocketTransport } = await import('../src/transports/websocket.ts')
    const wst = new WebSocketTransport(node)
    node.addTransport(wst)
    const link = (await wst.connect(sinkAddress)).link as WebSocketLink
    const ws = link.ws
    // bufferedAmount is the socket's queue (plus frames ws holds back, none without deflate): what
    // writeFrame compares with WS_HIGH_WATER_MARK; the link's onDrain follows the socket's 'drain'
    gauge = { full: () => ws.bufferedAmount >= HIGH_WATER, onDrain: (f) => link.socket.once('drain', f) }
    routeText = `/ws/${sinkAddress}/service/sink`
  } else {
    const { SerialTransport, openSerialPort } = await import('../src/transports/serial.ts')
    let port: Duplex | undefined
    const options: SerialTransportOptions = {
      openPort: async (path, baudRate) => (port = await openSerialPort(path, baudRate)),
    }
    if (SERIAL_MTU !== undefined) options.mtu = SERIAL_MTU
    const st = new SerialTransport(node, options)
    node.addTransport(st)
    await st.connect(serialPath!)
    const p = port!
    gauge = { full: () => p.writableLength >= HIGH_WATER, onDrain: (f) => p.once('drain', f) }
    routeText = `/serial${serialPath}/service/sink`
  }
  const route = parseRoute(routeText)
  const payload = randomBytes(size)
  const burst = Math.max(4, Math.ceil(HIGH_WATER / (size + 48)))
  let running = true
  const pump = (): void => {
    if (!running) return
    for (let n = 0; n < burst && !gauge.full(); n++) node.send(route, payload)
    if (gauge.full()) gauge.onDrain(pump)
    else setImmediate(pump)
  }
  pump()
  return {
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
  /** Share of one core each process used while measuring (serial: also socat, which carries the bytes between the ptys). */
  cpu: { sender: number; sink: number; socat?: number }
  /** CPU time (µs) each process spent per message delivered. */
  cpu_us_per_msg: { sender: number; sink: number }
  /** Sender + sink CPU µs per message. */
  pipeline_cpu_us_per_msg: number
  /** cores × 10^6 / pipeline_cpu_us_per_msg: the rate the pipeline's CPU cost allows when both processes share the cores. */
  cpu_bound_msgps: number
  sink_drops: number
}

/** Waits until the sink's count stops moving (what the sender had queued has arrived). */
async function quiesce(sink: Sink): Promise<void> {
  let last = -1
  for (let i = 0; i < 100; i++) {
    const m = await sink.mark()
    if (m.msgs === last || Number.isNaN(m.msgs)) return
    last = m.msgs
    await sleep(100)
  }
}

async function measure(sink: Sink, start: () => Promise<Sender>, socatPid?: number): Promise<Throughput> {
  const sender = await start()
  let m0: Mark, m1: Mark, self: NodeJS.CpuUsage, cpu0: number, cpu1: number, socat0: number, socat1: number
  try {
    await sleep(WARMUP_MS)
    cpu0 = cpuMsOf(sink.pid)
    socat0 = cpuMsOf(socatPid)
    const self0 = process.cpuUsage()
    m0 = await sink.mark()
    await sleep(MEASURE_MS)
    m1 = await sink.mark()
    self = process.cpuUsage(self0)
    cpu1 = cpuMsOf(sink.pid)
    socat1 = cpuMsOf(socatPid)
  } finally {
    await sender.stop()
  }
  await quiesce(sink)
  const wall = m1.t - m0.t
  const msgs = m1.msgs - m0.msgs
  const selfMs = (self.user + self.system) / 1000
  const senderUs = (selfMs * 1000) / Math.max(1, msgs)
  const sinkUs = ((cpu1 - cpu0) * 1000) / Math.max(1, msgs)
  return {
    msgps: Math.round((msgs * 1000) / wall),
    MBps: round(((m1.bytes - m0.bytes) * 1000) / wall / 1e6, 2),
    cpu: { sender: round(selfMs / wall, 2), sink: round((cpu1 - cpu0) / wall, 2), ...(socatPid !== undefined ? { socat: round((socat1 - socat0) / wall, 2) } : {}) },
    cpu_us_per_msg: { sender: round(senderUs, 3), sink: round(sinkUs, 3) },
    pipeline_cpu_us_per_msg: round(senderUs + sinkUs, 3),
    cpu_bound_msgps: senderUs + sinkUs > 0 ? Math.round((os.availableParallelism() * 1e6) / (senderUs + sinkUs)) : 0,
    sink_drops: m1.drops,
  }
}

async function runTransport(kind: Kind): Promise<Record<string, Throughput>> {
  const out: Record<string, Throughput> = {}
  let pty: PtyPair | undefined
  let ptyDir: string | undefined
  let sink: Sink | undefined
  try {
    if (kind === 'serial') {
      ptyDir = mkdtempSync(join(os.tmpdir(), 'tl-bench-pty-'))
      tempDirs.add(ptyDir)
      pty = await ptyPair(ptyDir)
      trackChild(pty.proc, log)
      sink = await startSink(['serial', pty.a, ...(SERIAL_MTU !== undefined ? [String(SERIAL_MTU)] : [])])
    } else {
      sink = await startSink([kind, '127.0.0.1:0'])
    }
    for (const size of sizesOf(kind)) {
      const s = sink
      out[sizeKey(size)] = await measure(s, () => startSender(kind, s.address, size, pty?.b), pty?.proc.pid)
    }
    return out
  } finally {
    await sink?.stop()
    await pty?.stop()
    if (ptyDir !== undefined) {
      rmSync(ptyDir, { recursive: true, force: true })
      tempDirs.delete(ptyDir)
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

// ------------------------------------------------------------------ main

const rounds: Partial<Record<Kind, Record<string, Throughput>>>[] = []
for (let r = 0; r < ROUNDS; r++) {
  const res: Partial<Record<Kind, Record<string, Throughput>>> = {}
  for (const k of KINDS) {
    log(`round ${r + 1}/${ROUNDS}: ${k}`)
    res[k] = await runTransport(k)
    const parts = Object.entries(res[k]!).map(([s, v]) => `${s}: ${v.msgps.toLocaleString('en')} msgs/s ${v.MBps} MB/s cpu ${JSON.stringify(v.cpu)} µs/msg ${JSON.stringify(v.cpu_us_per_msg)}${v.sink_drops > 0 ? ` sink drops ${v.sink_drops}` : ''}`)
    log(`  ${parts.join(' | ')}`)
  }
  rounds.push(res)
}

const results: Record<string, Record<string, unknown>> = {}
for (const k of KINDS) {
  const entry: Record<string, unknown> = {}
  for (const size of sizesOf(k)) {
    const key = sizeKey(size)
    const samples = rounds.map((r) => r[k]![key]!)
    // the round whose msgs/s is the median stands for the CPU figures
    const mid = [...samples].sort((a, b) => a.msgps - b.msgps)[samples.length >> 1]!
    entry[key] = {
      msgps: Math.round(median(samples.map((x) => x.msgps))),
      MBps: round(median(samples.map((x) => x.MBps)), 1),
      samples_msgps: samples.map((x) => x.msgps),
      samples_MBps: samples.map((x) => x.MBps),
      cpu: mid.cpu,
      cpu_us_per_msg: mid.cpu_us_per_msg,
      pipeline_cpu_us_per_msg: round(median(samples.map((x) => x.pipeline_cpu_us_per_msg)), 3),
      cpu_bound_msgps: Math.round(median(samples.map((x) => x.cpu_bound_msgps))),
      sink_drops: samples.reduce((a, x) => a + x.sink_drops, 0),
    }
  }
  results[k] = entry
}

type Cell = { msgps: number; MBps: number; cpu_bound_msgps: number }
const cell = (k: Kind, size: number): Cell | undefined => results[k]?.[sizeKey(size)] as Cell | undefined
const ratio = (a: number | undefined, b: number | undefined): number | null => (a === undefined || b === undefined || b === 0 ? null : round(a / b, 3))
const perRound = (a: Kind, b: Kind, size: number, f: 'msgps' | 'MBps'): (number | null)[] => rounds.map((r) => ratio(r[a]?.[sizeKey(size)]?.[f], r[b]?.[sizeKey(size)]?.[f]))
const ratios = {
  ws_vs_tcp_MBps_64KiB: ratio(cell('ws', 65536)?.MBps, cell('tcp', 65536)?.MBps),
  ws_vs_tcp_msgps_64B: ratio(cell('ws', 64)?.msgps, cell('tcp', 64)?.msgps),
  serial_vs_tcp_msgps_64B: ratio(cell('serial', 64)?.msgps, cell('tcp', 64)?.msgps),
  serial_vs_tcp_MBps_64KiB: ratio(cell('serial', 65536)?.MBps, cell('tcp', 65536)?.MBps),
  // the same comparison by CPU cost per message (less sensitive to other load on the machine)
  ws_vs_tcp_cpu_bound_64KiB: ratio(cell('ws', 65536)?.cpu_bound_msgps, cell('tcp', 65536)?.cpu_bound_msgps),
  ws_vs_tcp_cpu_bound_64B: ratio(cell('ws', 64)?.cpu_bound_msgps, cell('tcp', 64)?.cpu_bound_msgps),
}
const perRoundRatios = {
  ws_vs_tcp_MBps_64KiB: perRound('ws', 'tcp', 65536, 'MBps'),
  ws_vs_tcp_msgps_64B: perRound('ws', 'tcp', 64, 'msgps'),
}
const medianOrNull = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null)
  return v.length === 0 ? null : round(median(v), 3)
}
const targets = { ws_vs_tcp_MBps_64KiB: 0.7 }
const out = {
  bench: 'transports',
  date: new Date().toISOString(),
  node: process.version,
  cpus: os.availableParallelism(),
  config: {
    measure_ms: MEASURE_MS,
    warmup_ms: WARMUP_MS,
    rounds: ROUNDS,
    sender_high_water_bytes: HIGH_WATER,
    sizes: SIZES,
    serial_sizes: SERIAL_SIZES,
    serial_mtu: SERIAL_MTU ?? 'transport default (256)',
    serial: 'socat pty pair (a pty ignores the baud rate; 115200 asked for)',
    ws: 'ws:// on 127.0.0.1, perMessageDeflate false on both ends',
  },
  units: {
    msgps: 'messages/s counted at the sink',
    MBps: 'payload bytes/s at the sink, 10^6',
    cpu: 'share of one core while measuring',
    cpu_us_per_msg: 'CPU µs per message delivered, per process',
    cpu_bound_msgps: 'cores × 10^6 / (sender + sink CPU µs per message): the rate the CPU cost allows when both processes share the cores',
  },
  results,
  ratios,
  ratios_per_round: perRoundRatios,
  // the median of the per-round ratios (each compares neighbours in time: less exposed to load that comes and goes)
  ratios_round_median: {
    ws_vs_tcp_MBps_64KiB: medianOrNull(perRoundRatios.ws_vs_tcp_MBps_64KiB),
    ws_vs_tcp_msgps_64B: medianOrNull(perRoundRatios.ws_vs_tcp_msgps_64B),
  },
  targets,
  meets_targets: { ws_vs_tcp_MBps_64KiB: ratios.ws_vs_tcp_MBps_64KiB === null ? null : ratios.ws_vs_tcp_MBps_64KiB >= targets.ws_vs_tcp_MBps_64KiB },
}
const json = JSON.stringify(out, null, 2)
process.stdout.write(json + '\n')
if (process.env.BENCH_NO_WRITE !== '1') {
  const dir = join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `transports-${out.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`)
  writeFileSync(file, json + '\n')
  log(`wrote ${file}`)
}
process.exit(0)
