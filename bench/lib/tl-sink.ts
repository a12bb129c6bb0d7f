/**
 * throughline sink node for bench/relay.ts: a Node with the TCP transport, a `sink` worker that
 * counts messages and payload bytes, and an `echo` service (RTT).
 *
 *   node --import @tapjs/typescript/import bench/lib/tl-sink.ts listen
 *   node --import @tapjs/typescript/import bench/lib/tl-sink.ts relay HOST:PORT NAME
 *
 * `listen` listens on 127.0.0.1:0 (network input may reach `sink` and `echo`); `relay` registers
 * NAME at the relay node HOST:PORT with a RelayClient (forwarded messages may reach `sink` and
 * `echo`). Started with an IPC channel: sends `{ type: 'ready', address? }`; answers
 * `{ type: 'mark' }` with `{ type: 'mark', msgs, bytes, t, drops }`; stops on `{ type: 'stop' }`.
 */
import { Node, parseRoute } from '../../src/router/index.ts'
import { RelayClient, startEcho } from '../../src/services/index.ts'
import { TcpTransport } from '../../src/transports/index.ts'
import { send, serveCountingSink } from './tl-counting-sink.ts'

const [mode, relayAt, relayName] = process.argv.slice(2)

const node = await new Node({ name: 'sink' }).start()
const tcp = new TcpTransport(node)
node.addTransport(tcp)
let client: RelayClient | undefined
serveCountingSink(node, () => client?.stop())
startEcho(node)

if (mode === 'listen') {
  const l = await tcp.listen('127.0.0.1:0', { allow: ['sink', 'echo'] })
  send({ type: 'ready', address: l.address })
} else if (mode === 'relay' && relayAt !== undefined && relayName !== undefined) {
  client = new RelayClient(node, { relayRoute: parseRoute(`/tcp/${relayAt}`), name: relayName, allow: ['sink', 'echo'] })
  client.on('error', (err: Error) => process.stderr.write(`tl-sink: relay registration failed: ${err.message}\n`))
  client.once('registered', () => send({ type: 'ready' }))
  client.start()
} else {
  process.stderr.write('usage: tl-sink.ts listen | relay HOST:PORT NAME\n')
  process.exit(2)
}
