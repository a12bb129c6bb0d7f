/**
 * Benchmark: the secure channel (Noise XX with identities) — handshake engine, full channel
 * establishments, and encrypted against unencrypted throughput over a one-relay TCP route, all in
 * one run so the baselines share the machine's load.
 *
 *   npm run bench -- channel
 *   (or: TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/channel.ts, with dist/ built)
 *
 * Parts (BENCH_PARTS, comma-separated; default all three):
 * - `engine`          bench/noise.ts run as a child process (complete XX handshakes/s for the `node`
 *                     and `portable` providers and @chainsafe/libp2p-noise); its JSON is embedded
 *                     as printed, or `{ error }` when it fails.
 * - `establishments`  full secure channel establishments/s, both ends in this process over a
 *                     MemoryTransport on a private MemoryNetwork, `node` provider, Ed25519 software
 *                     identities on both ends: each one `connect()` until open (handshake, identity
 *                     bindings verified, trust policy, READY), then `close()`; sequential.
 * - `throughput`      sender (this process) → relay node (the real CLI: `bin/throughline.js node
 *                     start`) → sink process (a RelayClient registered as `sink`, a SecureChannels
 *                     listener `secure` and a `sink` worker counting messages and payload bytes).
 *                     `plain`:  /tcp/R/service/forward_to_sink/service/sink
 *                     `secure`: a channel to /tcp/R/service/forward_to_sink/service/secure, then
 *                               [channel, sink] (end to end encrypted; the relay forwards ciphertext).
 *                     Sizes BENCH_SIZES (default 64,1024,65536). Messages/s and MB/s (payload bytes,
 *                     10^6) are counted AT THE SINK after a warm-up; the sender respects backpressure
 *                     (stops while its TCP socket holds BENCH_HIGH_WATER bytes and waits for 'drain')
 *                     and sends at most BENCH_TURN_BYTES per event-loop turn (the TCP link corks per
 *                     turn: a longer turn holds back everything it sent until it ends).
 *                     Plain and secure are measured in the same round, interleaved: each gets
 *                     BENCH_MS per round in BENCH_SLICES slices that alternate plain/secure, so that
 *                     load from other processes on this shared machine hits both alike. Figures are
 *                     the median over BENCH_ROUNDS rounds (every round's figure is in the output),
 *                     with the ratio secure/plain per size: of the medians (`ratio_secure_to_plain`),
 *                     per round, and the median of the per-round ratios (`ratio_median_of_rounds`:
 *                     plain and secure of one round ran under the same load), the CPU each process
 *                     used and the GC pauses of sender and sink.
 *                     `throughput_direct` (diagnostic, BENCH_DIRECT_SIZES, default 65536; empty to
 *                     skip): the same sender and sink with no relay between them, same rounds.
 *
 * Code under test (BENCH_CODE): `dist` (default when dist/ is not older than src/) runs the sender
 * in a worker thread of this process and the sink as a plain node process, both on the compiled
 * dist/ modules, like the relay CLI; `ts` runs the sender on this thread and the sink under the
 * TypeScript loader, both on src/. The loader keeps the TypeScript compiler on the main thread
 * (~28 MB of heap against ~8 MB), and every full GC walks it; the secure path allocates a new
 * 64 KiB buffer or two per message, which is what starts those GCs, so `ts` overstates its cost.
 *
 * Prints ONE JSON object on stdout (progress on stderr) and writes it to
 * bench/results/channel-<date>.json (unless BENCH_NO_WRITE=1).
 * Env: BENCH_MS (3000), BENCH_SLICES (3), BENCH_WARMUP_MS (500, per slice), BENCH_ROUNDS (3),
 * BENCH_HIGH_WATER (1048576), BENCH_TURN_BYTES (262144), BENCH_SIZES, BENCH_DIRECT_SIZES,
 * BENCH_KINDS (plain,secure), BENCH_PARTS, BENCH_CODE, BENCH_EST_MS (3000, per round),
 * BENCH_EST_WARMUP (50 establishments), BENCH_NOISE_MS / BENCH_NOISE_WARMUP_MS / BENCH_NOISE_ROUNDS
 * (passed to bench/noise.ts as its BENCH_MS / BENCH_WARMUP_MS / BENCH_ROUNDS; its defaults
 * otherwise), BENCH_RELAY_NODE_ARGS / BENCH_SINK_NODE_ARGS (extra node arguments for the relay CLI
 * / the sink process, space-separated, e.g. `--cpu-prof --cpu-prof-dir=prof`).
 * Timings are never asserted anywhere.
 */
import { fork, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { PerformanceObserver } from 'node:perf_hooks'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { SecureChannels, SoftwareIdentity, type SecureChannel } from '../src/channel/index.ts'
import { local, Node, parseRoute, silentLogger, type Address } from '../src/router/index.ts'
import { RelayClient } from '../src/services/index.ts'
import { MemoryNetwork, MemoryTransport, TcpTransport, type TcpLink } from '../src/transports/index.ts'
import { MarkedChild, cpuMsOf, spawnRelayCli, waitReady } from './lib/process.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const SELF = fileURLToPath(import.meta.url)
const TS_LOADER = ['--import', '@tapjs/typescript/import']
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const log = (line: string): void => void process.stderr.write(`[bench channel] ${line}\n`)

// ================================================================== sender and sink
//
// Both take everything they use as `lib`, so that the same functions run on src/ (called here, or
// in the sink forked under the TypeScript loader) and on dist/ (their source text is evaluated in
// a worker thread or a plain node process that imports the compiled modules).

interface Lib {
  Node: typeof Node
  TcpTransport: typeof TcpTransport
  SecureChannels: typeof SecureChannels
  SoftwareIdentity: typeof SoftwareIdentity
  RelayClient: typeof RelayClient
  parseRoute: typeof parseRoute
  local: typeof local
  silentLogger: typeof silentLogger
  randomBytes: typeof randomBytes
  PerformanceObserver: typeof PerformanceObserver
}

const srcLib: Lib = { Node, TcpTransport, SecureChannels, SoftwareIdentity, RelayClient, parseRoute, local, silentLogger, randomBytes, PerformanceObserver }

interface SenderOptions {
  kind: 'plain' | 'secure'
  /** The TCP peer of the sender. */
  firstHop: string
  /** Route text up to the sink node, e.g. `/tcp/R/service/forward_to_sink`. */
  prefix: string
  size: number
  highWater: number
  turnBytes: number
}

interface SenderHandle {
  stop(): Promise<{ drops: number; detail: Record<string, number> }>
}

/**
 * One Node, fire-and-forget `node.send()`: per event-loop turn it sends at most `turnBytes` of
 * payload, and only while its TCP socket holds less than `highWater` bytes; then it waits for
 * 'drain'. `secure` opens a channel first and sends [channel, sink].
 */
async function startSender(lib: Lib, o: SenderOptions): Promise<SenderHandle> {
  const node = await new lib.Node({ name: `bench-${o.kind}`, logger: lib.silentLogger }).start()
  const tcp = new lib.TcpTransport(node)
  node.addTransport(tcp)
  const conn = await tcp.connect(o.firstHop)
  const socket = (conn.link as TcpLink).socket
  let route: Address[]
  let ch: SecureChannel | undefined
  if (o.kind === 'plain') route = lib.parseRoute(`${o.prefix}/service/sink`)
  else {
    const channels = new lib.SecureChannels(node, { identity: lib.SoftwareIdentity.generate() })
    ch = await channels.connect(lib.parseRoute(`${o.prefix}/service/secure`))
    route = [ch.address, lib.local('sink')]
  }
  const payload = lib.randomBytes(o.size)
  const burst = Math.max(1, Math.ceil(Math.min(o.turnBytes, o.highWater) / (o.size + 64)))
  let running = true
  const pump = (): void => {
    if (!running) return
    for (let n = 0; n < burst && socket.writableLength < o.highWater; n++) node.send(route, payload)
    if (socket.writableLength >= o.highWater) socket.once('drain', pump)
    else setImmediate(pump)
  }
  pump()
  return {
    async stop() {
      running = false
      const result = { drops: node.dropCount(), detail: { ...node.stats.drops } }
      ch?.close()
      await node.stop()
      return result
    },
  }
}

/**
 * The sink node: TCP, a `sink` worker counting, a SecureChannels listener `secure` (decrypted
 * messages may reach `sink`), registered as `sink` at the relay `relayAt`, and listening on TCP
 * itself for the direct diagnostic. IPC: sends `{ type: 'ready', address }`; answers `mark` with
 * its counters; stops on `stop`, SIGTERM or disconnect.
 */
async function sinkMain(lib: Lib, relayAt: string): Promise<void> {
  const send = (m: object): void => void process.send?.(m)
  let gcMs = 0
  new lib.PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration
  }).observe({ entryTypes: ['gc'] })
  const node = await new lib.Node({ name: 'sink', logger: lib.silentLogger }).start()
  const tcp = new lib.TcpTransport(node)
  node.addTransport(tcp)
  let msgs = 0
  let bytes = 0
  node.startWorker('sink', {
    handleMessage(_ctx, msg) {
      msgs++
      bytes += msg.payload.length
    },
  })
  const channels = new lib.SecureChannels(node, { identity: lib.SoftwareIdentity.generate() })
  const listener = await channels.listen('secure', { allow: ['sink'] })
  let rejected = 0
  listener.on('channel', (ch: SecureChannel) => ch.on('close', () => (rejected += ch.stats.rejected)))
  const direct = await tcp.listen('127.0.0.1:0', { allow: ['secure', 'sink'] })
  const client = new lib.RelayClient(node, { relayRoute: lib.parseRoute(`/tcp/${relayAt}`), name: 'sink', allow: ['secure', 'sink'] })
  client.on('error', (err: Error) => process.stderr.write(`channel sink: relay registration failed: ${err.message}\n`))
  client.once('registered', () => send({ type: 'ready', address: direct.address, heapMB: process.memoryUsage().heapUsed / 1e6 }))
  client.start()
  const stop = async (): Promise<void> => {
    client.stop()
    await node.stop()
    process.exit(0)
  }
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'mark') send({ type: 'mark', msgs, bytes, t: performance.now(), drops: node.dropCount(), channels: listener.channelsOpen, rejected, gcMs })
    else if (m?.type === 'stop') void stop()
  })
  process.on('disconnect', () => void stop())
  process.on('SIGTERM', () => void stop()) // a clean exit (lets --cpu-prof write its profile)
}

/** ESM source that imports the compiled modules and builds `lib`. */
function distLibSource(): string {
  const u = (p: string): string => JSON.stringify(pathToFileURL(join(root, 'dist', p)).href)
  return `
    import { randomBytes } from 'node:crypto'
    import { PerformanceObserver } from 'node:perf_hooks'
    const router = await import(${u('router/index.js')})
    const transports = await import(${u('transports/index.js')})
    const channel = await import(${u('channel/index.js')})
    const services = await import(${u('services/index.js')})
    const lib = {
      Node: router.Node, parseRoute: router.parseRoute, local: router.local, silentLogger: router.silentLogger,
      TcpTransport: transports.TcpTransport, SecureChannels: channel.SecureChannels, SoftwareIdentity: channel.SoftwareIdentity,
      RelayClient: services.RelayClient, randomBytes, PerformanceObserver,
    }
  `
}

/** Newest modification time (ms) of any file under `dir`. */
function newestMtime(dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p))
    else if (e.isFile()) newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

if (process.argv[2] === 'sink') {
  await sinkMain(srcLib, process.argv[3]!)
} else {
  await main()
}

// ================================================================== the bench (main process)

async function main(): Promise<void> {
  const MEASURE_MS = Number(process.env.BENCH_MS ?? 3000)
  const SLICES = Math.max(1, Number(process.env.BENCH_SLICES ?? 3))
  const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 500)
  const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))
  const HIGH_WATER = Number(process.env.BENCH_HIGH_WATER ?? 1024 * 1024)
  const TURN_BYTES = Number(process.env.BENCH_TURN_BYTES ?? 256 * 1024)
  const SIZES = (process.env.BENCH_SIZES ?? '64,1024,65536').split(',').map(Number)
  /** Sizes also measured with no relay (diagnostic); empty to skip. */
  const DIRECT_SIZES = (process.env.BENCH_DIRECT_SIZES ?? '65536').split(',').filter((x) => x !== '').map(Number)
  /** Which of plain/secure to measure (both by default; the ratio needs both). */
  const KINDS = (process.env.BENCH_KINDS ?? 'plain,secure').split(',') as Kind[]
  const EST_MS = Number(process.env.BENCH_EST_MS ?? 3000)
  const EST_WARMUP = Number(process.env.BENCH_EST_WARMUP ?? 50)
  const ALL_PARTS = ['engine', 'establishments', 'throughput'] as const
  type Part = (typeof ALL_PARTS)[number]
  const PARTS = (process.env.BENCH_PARTS?.split(',') ?? [...ALL_PARTS]) as Part[]
  for (const p of PARTS) if (!ALL_PARTS.includes(p)) throw new Error(`unknown part ${p} (known: ${ALL_PARTS.join(', ')})`)
  const nodeArgs = (v: string | undefined): string[] => (v ?? '').split(' ').filter((x) => x !== '')
  const RELAY_NODE_ARGS = nodeArgs(process.env.BENCH_RELAY_NODE_ARGS)
  const SINK_NODE_ARGS = nodeArgs(process.env.BENCH_SINK_NODE_ARGS)
  const sizeKey = (size: number): string => (size >= 1024 && size % 1024 === 0 ? `${size / 1024}KiB` : `${size}B`)
  const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b)
    const m = s.length >> 1
    return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
  }

  // which code runs the sender and the sink
  const distMain = join(root, 'dist', 'cli', 'main.js')
  const distFresh = existsSync(distMain) && statSync(distMain).mtimeMs >= newestMtime(join(root, 'src'))
  let CODE = (process.env.BENCH_CODE ?? 'dist') as 'dist' | 'ts'
  if (CODE !== 'dist' && CODE !== 'ts') throw new Error(`BENCH_CODE must be dist or ts, not ${String(CODE)}`)
  if (CODE === 'dist' && !distFresh) {
    log('dist/ is missing or older than src/ (run through `npm run bench`, which builds it): sender and sink run src/ (BENCH_CODE=ts)')
    CODE = 'ts'
  }

  // -------------------------------------------------------------- child processes

  interface Mark {
    msgs: number
    bytes: number
    t: number
    drops?: number
    channels?: number
    rejected?: number
    gcMs?: number
  }

  /** A bench child process that answers `mark` requests. */
  type Child = MarkedChild<Mark>

  /** The relay node: the real CLI, `node bin/throughline.js node start --tcp 127.0.0.1:0`. */
  async function startRelayCli(): Promise<{ child: Child; address: string }> {
    let child: Child | undefined
    const { address } = await spawnRelayCli(root, RELAY_NODE_ARGS, (proc) => (child = new MarkedChild<Mark>('relay (CLI)', proc, log)))
    return { child: child!, address }
  }

  /** The sink process (see sinkMain), on dist/ or src/; waits for its `ready` (registered at R). */
  async function startSink(relayAt: string): Promise<{ child: Child; address: string; heapMB: number }> {
    const stdio: ['ignore', 'inherit', 'inherit', 'ipc'] = ['ignore', 'inherit', 'inherit', 'ipc']
    const proc =
      CODE === 'ts'
        ? fork(SELF, ['sink', relayAt], { cwd: root, execArgv: [...TS_LOADER, ...SINK_NODE_ARGS], env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }, stdio })
        : spawn(process.execPath, [...SINK_NODE_ARGS, '--input-type=module', '-e', `${distLibSource()}\nawait (${sinkMain.toString()})(lib, process.argv[1])`, '--', relayAt], { cwd: root, stdio })
    const child = new MarkedChild<Mark>('sink', proc, log)
    const m = await waitReady<{ address: string; heapMB?: number }>(proc, 'sink')
    const ready = { address: m.address, heapMB: m.heapMB ?? NaN }
    return { child, ...ready }
  }

  // -------------------------------------------------------------- the sender (this thread, or a worker thread on dist/)

  interface SenderHost {
    start(o: SenderOptions): Promise<SenderHandle>
    /** GC pause time (ms) of the sender's thread so far. */
    gcMs(): Promise<number>
    heapMB(): Promise<number>
    close(): Promise<void>
  }

  /** The sender on this thread, on src/. */
  function localSenderHost(): SenderHost {
    let gcMs = 0
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcMs += e.duration
    })
    obs.observe({ entryTypes: ['gc'] })
    return {
      start: (o) => startSender(srcLib, o),
      gcMs: async () => gcMs,
      heapMB: async () => process.memoryUsage().heapUsed / 1e6,
      close: async () => obs.disconnect(),
    }
  }

  /** The sender in a worker thread of this process, on dist/, without the TypeScript loader. */
  async function workerSenderHost(): Promise<SenderHost> {
    const source = `${distLibSource()}
      import { parentPort } from 'node:worker_threads'
      const startSender = (${startSender.toString()})
      let gcMs = 0
      new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration }).observe({ entryTypes: ['gc'] })
      let current
      parentPort.on('message', async (m) => {
        try {
          if (m.type === 'start') { current = await startSender(lib, m.options); parentPort.postMessage({ type: 'started' }) }
          else if (m.type === 'stop') { const r = await current.stop(); current = undefined; parentPort.postMessage({ type: 'stopped', ...r }) }
          else if (m.type === 'gc') parentPort.postMessage({ type: 'gc', gcMs, heapMB: process.memoryUsage().heapUsed / 1e6 })
        } catch (err) { parentPort.postMessage({ type: 'error', message: String(err?.stack ?? err) }) }
      })
      parentPort.postMessage({ type: 'ready' })`
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`), { execArgv: [] })
    const replies: ((m: Record<string, unknown>) => void)[] = []
    let failed: Error | undefined
    const fail = (err: Error): void => {
      failed ??= err
      for (const r of replies.splice(0)) r({ type: 'error', message: err.message })
    }
    worker.on('message', (m: Record<string, unknown>) => replies.shift()?.(m))
    worker.on('error', (err) => fail(new Error(`sender worker failed: ${err.stack ?? err.message}`)))
    worker.on('exit', (code) => fail(new Error(`sender worker exited (${code})`)))
    const ask = (msg: object | undefined): Promise<Record<string, unknown>> =>
      new Promise((resolve, reject) => {
        if (failed !== undefined) return reject(failed)
        replies.push((m) => (m['type'] === 'error' ? reject(new Error(String(m['message']))) : resolve(m)))
        if (msg !== undefined) worker.postMessage(msg)
      })
    await ask(undefined) // ready
    return {
      async start(options) {
        await ask({ type: 'start', options })
        return {
          async stop() {
            const r = await ask({ type: 'stop' })
            return { drops: r['drops'] as number, detail: r['detail'] as Record<string, number> }
          },
        }
      },
      gcMs: async () => (await ask({ type: 'gc' }))['gcMs'] as number,
      heapMB: async () => (await ask({ type: 'gc' }))['heapMB'] as number,
      close: async () => void (await worker.terminate()),
    }
  }

  // -------------------------------------------------------------- part 1: the engine (bench/noise.ts)

  async function runEngine(): Promise<Record<string, unknown>> {
    const env: NodeJS.ProcessEnv = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }
    // bench/noise.ts reads BENCH_MS / BENCH_WARMUP_MS / BENCH_ROUNDS: give it its own (or its defaults)
    delete env.BENCH_MS
    delete env.BENCH_WARMUP_MS
    delete env.BENCH_ROUNDS
    if (process.env.BENCH_NOISE_MS !== undefined) env.BENCH_MS = process.env.BENCH_NOISE_MS
    if (process.env.BENCH_NOISE_WARMUP_MS !== undefined) env.BENCH_WARMUP_MS = process.env.BENCH_NOISE_WARMUP_MS
    if (process.env.BENCH_NOISE_ROUNDS !== undefined) env.BENCH_ROUNDS = process.env.BENCH_NOISE_ROUNDS
    env.BENCH_NO_WRITE = '1' // its figures are embedded in this bench's results file
    const proc = spawn(process.execPath, [...TS_LOADER, join(root, 'bench', 'noise.ts')], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    const child = new MarkedChild<Mark>('noise bench', proc, log)
    child.stopping = true // its exit is expected
    let out = ''
    let err = ''
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')))
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString('utf8')))
    const t = setTimeout(() => proc.kill('SIGKILL'), 180_000)
    const [code, signal] = (await once(proc, 'exit')) as [number | null, string | null]
    clearTimeout(t)
    const lines = out.trim().split('\n')
    try {
      if (code !== 0) throw new Error(`exited with ${code ?? signal}`)
      return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>
    } catch (e) {
      return { error: `bench/noise.ts failed: ${(e as Error).message}`, stderr: err.trim().split('\n').slice(-10).join('\n'), stdout: out.slice(-2000) }
    }
  }

  // -------------------------------------------------------------- part 2: establishments (memory)

  interface Establishments {
    provider: string
    transport: string
    perSec: number
    msEach: number
    rounds_perSec: number[]
    established: number
    responder_open_channels_after: number
    responder_half_open_after: number
    drops: Record<string, number>
  }

  async function runEstablishments(): Promise<Establishments> {
    const net = new MemoryNetwork()
    const mk = async (name: string): Promise<{ node: Node; mem: MemoryTransport }> => {
      const node = await new Node({ name, logger: silentLogger }).start()
      const mem = new MemoryTransport(node, { network: net })
      node.addTransport(mem)
      return { node, mem }
    }
    const d = await mk('D')
    await d.mem.listen('D', { allow: ['secure'] })
    const dChannels = new SecureChannels(d.node, { identity: SoftwareIdentity.generate(), crypto: 'node' })
    const listener = await dChannels.listen('secure', {})
    const c = await mk('C')
    const cChannels = new SecureChannels(c.node, { identity: SoftwareIdentity.generate(), crypto: 'node' })
    const route = parseRoute('/memory/D/service/secure')
    const establish = async (): Promise<void> => {
      const ch = await cChannels.connect(route)
      ch.close()
    }
    for (let i = 0; i < EST_WARMUP; i++) await establish()
    const rates: number[] = []
    let total = 0
    for (let r = 0; r < ROUNDS; r++) {
      let n = 0
      const t0 = performance.now()
      let el = 0
      do {
        await establish()
        n++
        el = performance.now() - t0
      } while (el < EST_MS)
      rates.push(Math.round((n * 1000) / el))
      total += n
      await sleep(20) // let the last CLOSE reach the responder
    }
    await sleep(50)
    const result: Establishments = {
      provider: 'node',
      transport: 'memory (private MemoryNetwork), both ends in this process',
      perSec: Math.round(median(rates)),
      msEach: round(1000 / median(rates), 3),
      rounds_perSec: rates,
      established: total,
      responder_open_channels_after: listener.channelsOpen,
      responder_half_open_after: listener.halfOpen,
      drops: { ...c.node.stats.drops, ...Object.fromEntries(Object.entries(d.node.stats.drops).map(([k, v]) => [`responder ${k}`, v])) } as Record<string, number>,
    }
    await c.node.stop()
    await d.node.stop()
    return result
  }

  // -------------------------------------------------------------- part 3: throughput (TCP, one relay)

  type Kind = 'plain' | 'secure'
  type Mode = 'relay' | 'direct'

  /** Where the sender sends: its TCP peer and the route text up to the sink node. */
  interface Path {
    firstHop: string
    prefix: string
  }

  /** One measured slice (counted at the sink), with the CPU each process used meanwhile. */
  interface Slice {
    msgs: number
    bytes: number
    ms: number
    cpuMs: Record<string, number>
    gcMs: Record<string, number>
    senderDrops: number
    sinkDrops: number
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

  async function measureSlice(host: SenderHost, kind: Kind, path: Path, size: number, procs: Child[], sink: Child, ms: number): Promise<Slice> {
    const s = await host.start({ kind, firstHop: path.firstHop, prefix: path.prefix, size, highWater: HIGH_WATER, turnBytes: TURN_BYTES })
    await sleep(WARMUP_MS)
    const cpu0 = procs.map((c) => cpuMsOf(c.pid))
    const self0 = process.cpuUsage()
    const gc0 = await host.gcMs()
    const m0 = await sink.mark()
    await sleep(ms)
    const m1 = await sink.mark()
    const self1 = process.cpuUsage(self0)
    const gc1 = await host.gcMs()
    const cpu1 = procs.map((c) => cpuMsOf(c.pid))
    const { drops } = await s.stop()
    await quiesce(sink)
    const cpuMs: Record<string, number> = { sender: (self1.user + self1.system) / 1000 }
    procs.forEach((c, i) => (cpuMs[c.name] = cpu1[i]! - cpu0[i]!))
    return {
      msgs: m1.msgs - m0.msgs,
      bytes: m1.bytes - m0.bytes,
      ms: m1.t - m0.t,
      cpuMs,
      gcMs: { sender: gc1 - gc0, sink: (m1.gcMs ?? 0) - (m0.gcMs ?? 0) },
      senderDrops: drops,
      sinkDrops: (m1.drops ?? 0) - (m0.drops ?? 0),
    }
  }

  interface Throughput {
    msgps: number
    MBps: number
    /** Share of one core each process used while measuring. */
    cpu: Record<string, number>
    /** CPU µs each process spent per message delivered. */
    cpu_us_per_msg: Record<string, number>
    /** GC pause µs (wall) per message delivered, sender thread and sink. */
    gc_us_per_msg: Record<string, number>
    sender_drops: number
    sink_drops: number
  }

  /** The figure of one round: the sum of its slices. */
  function combine(slices: Slice[]): Throughput {
    const msgs = slices.reduce((a, s) => a + s.msgs, 0)
    const bytes = slices.reduce((a, s) => a + s.bytes, 0)
    const ms = slices.reduce((a, s) => a + s.ms, 0)
    const sum = (f: (s: Slice) => Record<string, number>): Record<string, number> => {
      const out: Record<string, number> = {}
      for (const s of slices) for (const [k, v] of Object.entries(f(s))) out[k] = (out[k] ?? 0) + v
      return out
    }
    const cpuMs = sum((s) => s.cpuMs)
    const gcMs = sum((s) => s.gcMs)
    const per = (x: Record<string, number>, f: (v: number) => number): Record<string, number> => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, f(v)]))
    return {
      msgps: Math.round((msgs * 1000) / ms),
      MBps: round((bytes * 1000) / ms / 1e6, 1),
      cpu: per(cpuMs, (v) => round(v / ms, 2)),
      cpu_us_per_msg: per(cpuMs, (v) => round((v * 1000) / Math.max(1, msgs), 2)),
      gc_us_per_msg: per(gcMs, (v) => round((v * 1000) / Math.max(1, msgs), 2)),
      sender_drops: slices.reduce((a, s) => a + s.senderDrops, 0),
      sink_drops: slices.reduce((a, s) => a + s.sinkDrops, 0),
    }
  }

  type Round = Record<Mode, Record<string, Partial<Record<Kind, Throughput>>>>

  /**
   * One round: a fresh relay CLI and sink; every size, plain and secure interleaved in slices,
   * through the relay, then direct.
   */
  async function throughputRound(r: number, host: SenderHost, heaps: Record<string, number>): Promise<Round> {
    const children: Child[] = []
    const res: Round = { relay: {}, direct: {} }
    try {
      const relay = await startRelayCli()
      children.push(relay.child)
      const sink = await startSink(relay.address)
      children.push(sink.child)
      heaps['sink'] = round(sink.heapMB, 1)
      const modes: Record<Mode, { path: Path; procs: Child[]; sizes: number[] }> = {
        relay: { path: { firstHop: relay.address, prefix: `/tcp/${relay.address}/service/forward_to_sink` }, procs: [relay.child, sink.child], sizes: SIZES },
        direct: { path: { firstHop: sink.address, prefix: `/tcp/${sink.address}` }, procs: [sink.child], sizes: DIRECT_SIZES },
      }
      for (const mode of ['relay', 'direct'] as const) {
        const { path, procs, sizes } = modes[mode]
        for (const size of sizes) {
          const slices: Record<Kind, Slice[]> = { plain: [], secure: [] }
          for (let i = 0; i < SLICES; i++) {
            // alternate which goes first (ABBA…), so that drift hits both alike
            const order = ((r * SLICES + i) % 2 === 0 ? (['plain', 'secure'] as const) : (['secure', 'plain'] as const)).filter((k) => KINDS.includes(k))
            for (const kind of order) slices[kind].push(await measureSlice(host, kind, path, size, procs, sink.child, MEASURE_MS / SLICES))
          }
          const cell: Partial<Record<Kind, Throughput>> = {}
          for (const kind of KINDS) {
            const v = (cell[kind] = combine(slices[kind]))
            log(`round ${r + 1}/${ROUNDS} ${mode} ${sizeKey(size)} ${kind}: ${v.msgps.toLocaleString('en')} msgs/s ${v.MBps} MB/s cpu ${JSON.stringify(v.cpu)} µs/msg ${JSON.stringify(v.cpu_us_per_msg)} gc µs/msg ${JSON.stringify(v.gc_us_per_msg)}`)
          }
          if (cell.secure !== undefined && cell.plain !== undefined) log(`  ${mode} secure/plain ${sizeKey(size)}: ${round(cell.secure.MBps / cell.plain.MBps, 3)}`)
          res[mode][sizeKey(size)] = cell
        }
      }
    } finally {
      await Promise.all(children.map((c) => c.stop()))
    }
    return res
  }

  /** Medians over the rounds, per size and kind, and the secure/plain ratios. */
  function summarise(rounds: Round[], mode: Mode, sizes: number[]): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const size of sizes) {
      const k = sizeKey(size)
      const entry: Record<string, unknown> = {}
      for (const kind of KINDS) {
        const samples = rounds.map((r) => r[mode][k]![kind]!)
        // the round whose msgs/s is the median stands for the CPU and GC figures
        const mid = [...samples].sort((a, b) => a.msgps - b.msgps)[samples.length >> 1]!
        entry[kind] = {
          msgps: Math.round(median(samples.map((x) => x.msgps))),
          MBps: round(median(samples.map((x) => x.MBps)), 1),
          samples_MBps: samples.map((x) => x.MBps),
          cpu: mid.cpu,
          cpu_us_per_msg: mid.cpu_us_per_msg,
          gc_us_per_msg: mid.gc_us_per_msg,
          sender_drops: Math.max(...samples.map((x) => x.sender_drops)),
          sink_drops: Math.max(...samples.map((x) => x.sink_drops)),
        }
      }
      const p = entry['plain'] as { MBps: number } | undefined
      const s = entry['secure'] as { MBps: number } | undefined
      if (p !== undefined && s !== undefined) {
        // the ratio of the two medians, and (plain and secure being interleaved within a round,
        // under the same load) the median of the per-round ratios
        const perRound = rounds.map((r) => {
          const c = r[mode][k]!
          return c.plain!.MBps > 0 ? round(c.secure!.MBps / c.plain!.MBps, 3) : null
        })
        entry['ratio_secure_to_plain'] = p.MBps > 0 ? round(s.MBps / p.MBps, 3) : null
        entry['ratio_per_round'] = perRound
        const valid = perRound.filter((x): x is number => x !== null)
        entry['ratio_median_of_rounds'] = valid.length > 0 ? round(median(valid), 3) : null
      }
      out[k] = entry
    }
    return out
  }

  async function runThroughput(): Promise<{ relay: Record<string, unknown>; direct: Record<string, unknown>; heapMB: Record<string, number> }> {
    const host = CODE === 'dist' ? await workerSenderHost() : localSenderHost()
    const heaps: Record<string, number> = {}
    const rounds: Round[] = []
    try {
      for (let r = 0; r < ROUNDS; r++) rounds.push(await throughputRound(r, host, heaps))
      heaps['sender'] = round(await host.heapMB(), 1)
    } finally {
      await host.close()
    }
    return {
      heapMB: heaps,
      relay: {
        route_plain: '/tcp/R/service/forward_to_sink/service/sink',
        route_secure: 'a channel to /tcp/R/service/forward_to_sink/service/secure, then [channel, sink]',
        ...summarise(rounds, 'relay', SIZES),
      },
      direct: {
        note: 'diagnostic: the same sender and sink with no relay between them (the sink listens on TCP), in the same rounds',
        route_plain: '/tcp/S/service/sink',
        route_secure: 'a channel to /tcp/S/service/secure, then [channel, sink]',
        ...summarise(rounds, 'direct', DIRECT_SIZES),
      },
    }
  }

  // -------------------------------------------------------------- main

  const started = new Date()
  const out: Record<string, unknown> = {
    bench: 'channel',
    date: started.toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    loadavg_at_start: os.loadavg().map((x) => round(x, 2)),
    config: {
      parts: PARTS,
      code: CODE === 'dist' ? 'dist: sender in a worker thread of this process and sink process on the compiled dist/' : 'ts: sender on this thread and sink process on src/ under the TypeScript loader',
      measure_ms_per_kind_per_round: MEASURE_MS,
      slices: SLICES,
      warmup_ms_per_slice: WARMUP_MS,
      rounds: ROUNDS,
      sender_high_water_bytes: HIGH_WATER,
      sender_turn_bytes: TURN_BYTES,
      sizes: SIZES,
      direct_sizes: DIRECT_SIZES,
      kinds: KINDS,
      establishment_ms_per_round: EST_MS,
    },
    units: {
      handshakesPerSec: 'complete XX handshakes per second (bench/noise.ts)',
      establishments: 'secure channels connect()ed until open, then close()d, per second',
      msgps: 'messages/s counted at the sink',
      MBps: 'payload bytes/s at the sink, 10^6',
      cpu: 'share of one core while measuring (sender: the whole bench process)',
      cpu_us_per_msg: 'CPU µs per message delivered, per process',
      gc_us_per_msg: 'GC pause µs (wall clock) per message delivered',
    },
  }
  if (PARTS.includes('engine')) {
    log('engine: bench/noise.ts')
    out['engine'] = await runEngine()
    log(`  ${JSON.stringify(out['engine']).slice(0, 400)}`)
  }
  if (PARTS.includes('establishments')) {
    log('establishments (memory transport, node provider, identities)')
    try {
      out['establishments'] = await runEstablishments()
    } catch (e) {
      out['establishments'] = { error: String((e as Error)?.stack ?? e) }
    }
    log(`  ${JSON.stringify(out['establishments'])}`)
  }
  if (PARTS.includes('throughput')) {
    log(`throughput (${CODE === 'dist' ? 'compiled dist/: sender in a worker thread' : 'src/ under the TypeScript loader'})`)
    const tp = await runThroughput()
    out['throughput'] = tp.relay
    if (DIRECT_SIZES.length > 0) out['throughput_direct'] = tp.direct
    out['heap_used_MB'] = tp.heapMB
  }

  out['loadavg_at_end'] = os.loadavg().map((x) => round(x, 2))

  // -------------------------------------------------------------- targets
  const engine = out['engine'] as { node?: { handshakesPerSec?: number }; ratioNodeToLibp2p?: number } | undefined
  const tp = out['throughput'] as Record<string, { ratio_secure_to_plain?: number | null; ratio_median_of_rounds?: number | null }> | undefined
  const hs = engine?.node?.handshakesPerSec
  const vsLibp2p = engine?.ratioNodeToLibp2p
  const r64k = tp?.['64KiB']?.ratio_secure_to_plain ?? null
  const r64kPaired = tp?.['64KiB']?.ratio_median_of_rounds ?? null
  const targets = { node_handshakes_per_sec: 2000, node_vs_libp2p_noise: 10, secure_vs_plain_MBps_64KiB: 0.6 }
  const atLeast = (x: number | null | undefined, t: number): boolean | null => (x === null || x === undefined ? null : x >= t)
  out['targets'] = targets
  out['figures'] = {
    node_handshakes_per_sec: hs ?? null,
    node_vs_libp2p_noise: vsLibp2p ?? null,
    secure_vs_plain_MBps_64KiB: r64k,
    secure_vs_plain_MBps_64KiB_median_of_rounds: r64kPaired,
  }
  out['meets_targets'] = {
    node_handshakes_per_sec: atLeast(hs, targets.node_handshakes_per_sec),
    node_vs_libp2p_noise: atLeast(vsLibp2p, targets.node_vs_libp2p_noise),
    secure_vs_plain_MBps_64KiB: atLeast(r64k, targets.secure_vs_plain_MBps_64KiB),
    secure_vs_plain_MBps_64KiB_median_of_rounds: atLeast(r64kPaired, targets.secure_vs_plain_MBps_64KiB),
  }

  const json = JSON.stringify(out, null, 2)
  process.stdout.write(json + '\n')
  if (process.env.BENCH_NO_WRITE !== '1') {
    const dir = join(root, 'bench', 'results')
    mkdirSync(dir, { recursive: true })
    const stamp = started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')
    const file = join(dir, `channel-${stamp}.json`)
    writeFileSync(file, json + '\n')
    log(`wrote ${file}`)
  }
  process.exit(0)
}
