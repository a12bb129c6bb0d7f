// Acceptance: 100,000 messages sent as fast as possible over TCP to a worker that handles one per
// millisecond. The receiving node's memory stays bounded because the connection is paused while
// the worker's mailbox is full (TCP flow control then holds the producer), and none are lost.
import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Node, silentLogger } from '../src/router/index.ts'
import { TcpTransport, type TcpLink } from '../src/transports/index.ts'

const COUNT = 100_000
const SIZE = 1024

t.test('backpressure: 100,000 messages to a 1-per-ms worker, bounded memory, none lost', async (t) => {
  const node = await new Node({ name: 'slow', logger: silentLogger, limits: { mailboxCapacity: 256 } }).start()
  const tcp = new TcpTransport(node)
  node.addTransport(tcp)
  const listener = await tcp.listen('127.0.0.1:0', { allow: ['slow'] })

  // one message per millisecond: each handler waits for the next tick of a 1 ms clock
  const waiting: (() => void)[] = []
  const clock = setInterval(() => waiting.shift()?.(), 1)
  let next = 0
  let outOfOrder = 0
  node.startWorker('slow', {
    handleMessage: async (_ctx, msg) => {
      await new Promise<void>((resolve) => waiting.push(resolve))
      if (Buffer.from(msg.payload).readUInt32BE(0) !== next) outOfOrder++
      next++
    },
  })

  // measure what is retained, not garbage waiting for collection: collect before each sample
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  gc()
  const base = process.memoryUsage()
  const baseline = base.heapUsed + base.arrayBuffers
  let peak = 0
  let pausedSeen = 0
  const sampler = setInterval(() => {
    gc()
    const m = process.memoryUsage()
    peak = Math.max(peak, m.heapUsed + m.arrayBuffers - baseline)
    for (const c of tcp.connections()) if ((c.link as TcpLink).socket.isPaused()) pausedSeen++
  }, 500)

  const producer = spawn(process.execPath, [fileURLToPath(new URL('./helpers/flood-producer.mjs', import.meta.url)), String(listener.port), String(COUNT), String(SIZE), 'slow'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let producerOut = ''
  producer.stdout.on('data', (d: Buffer) => (producerOut += d.toString()))
  t.teardown(async () => {
    clearInterval(clock)
    clearInterval(sampler)
    if (producer.exitCode === null) producer.kill()
    await node.stop()
  })

  await new Promise<void>((resolve) => {
    const iv = setInterval(() => {
      if (next >= COUNT) {
        clearInterval(iv)
        resolve()
      }
    }, 200)
  })
  t.equal(next, COUNT, 'every message handled')
  t.equal(outOfOrder, 0, 'in order')
  t.equal(node.dropCount(), 0, 'nothing dropped')
  t.ok(pausedSeen > 0, 'the connection was paused while the mailbox was full')
  t.match(producerOut, /^sent 100000 blocked [1-9]\d*/, 'the producer was held back by TCP flow control')
  const unbounded = COUNT * SIZE
  t.ok(peak < 16 * 1024 * 1024, `memory growth peaked at ${(peak / 1048576).toFixed(1)} MiB (all messages would take ${(unbounded / 1048576).toFixed(0)} MiB)`)
})
