/**
 * throughline sink node for bench/transports.ts: a Node listening on one transport, with a `sink`
 * worker that counts messages and payload bytes.
 *
 *   node --import @tapjs/typescript/import bench/lib/tl-transport-sink.ts tcp 127.0.0.1:0
 *   node --import @tapjs/typescript/import bench/lib/tl-transport-sink.ts ws 127.0.0.1:0
 *   node --import @tapjs/typescript/import bench/lib/tl-transport-sink.ts serial /path/to/pty [MTU]
 *
 * Network input may reach only `sink`. Started with an IPC channel: sends
 * `{ type: 'ready', address }` (the bound HOST:PORT, or the serial path); answers `{ type: 'mark' }`
 * with `{ type: 'mark', msgs, bytes, t, drops }` (t in ms, this process's monotonic clock); stops on
 * `{ type: 'stop' }`, on disconnect and on SIGTERM (a clean exit, so that --cpu-prof writes its profile).
 */
import { Node } from '../../src/router/index.ts'
import { send, serveCountingSink } from './tl-counting-sink.ts'

const [kind, where, mtuArg] = process.argv.slice(2)

const node = await new Node({ name: 'sink' }).start()
serveCountingSink(node)

// each transport's own module, loaded when used (a sink of one transport needs none of the others)
let address: string
if (kind === 'tcp' && where !== undefined) {
  const { TcpTransport } = await import('../../src/transports/tcp.ts')
  const t = new TcpTransport(node)
  node.addTransport(t)
  address = (await t.listen(where, { allow: ['sink'] })).address
} else if (kind === 'ws' && where !== undefined) {
  const { WebSocketTransport } = await import('../../src/transports/websocket.ts')
  const t = new WebSocketTransport(node)
  node.addTransport(t)
  address = (await t.listen(where, { allow: ['sink'] })).address
} else if (kind === 'serial' && where !== undefined) {
  const { SerialTransport } = await import('../../src/transports/serial.ts')
  const t = new SerialTransport(node, mtuArg !== undefined ? { mtu: Number(mtuArg) } : {})
  node.addTransport(t)
  address = (await t.listen(where, { allow: ['sink'] })).address
} else {
  process.stderr.write('usage: tl-transport-sink.ts tcp|ws HOST:PORT | serial PATH [MTU]\n')
  process.exit(2)
}
send({ type: 'ready', address })
