// 01 — two nodes, one TCP hop.
// A node listens on 127.0.0.1 (any free port) and runs the echo service; a second node sends
// "hello" along the route /tcp/HOST:PORT/service/echo and prints the reply.
// Run: npm run example -- 01-echo-over-tcp
import { Node, parseRoute } from '../src/router/index.ts'
import { TcpTransport } from '../src/transports/index.ts'
import { startEcho } from '../src/services/index.ts'

export async function main(log: (line: string) => void = console.log): Promise<string> {
  const server = await new Node({ name: 'server' }).start()
  const serverTcp = new TcpTransport(server)
  server.addTransport(serverTcp)
  startEcho(server)
  // deny by default: messages from this listener may reach the echo service only
  const listener = await serverTcp.listen('127.0.0.1:0', { allow: ['echo'] })
  log(`server listening on tcp ${listener.address}`)

  const client = await new Node({ name: 'client' }).start()
  client.addTransport(new TcpTransport(client))
  const route = parseRoute(`/tcp/${listener.address}/service/echo`)
  const reply = await client.request(route, Buffer.from('hello'))
  const text = Buffer.from(reply.payload).toString()
  log(`client got "${text}" back`)

  await client.stop()
  await server.stop()
  return text
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
