// 02 — the main demo: a device behind NAT, reached through a relay.
// 1. A relay node listens on TCP (127.0.0.1, a free port) with the relay and echo services.
// 2. A device node (which accepts no inbound connections) dials the relay and registers the name
//    "device"; the relay starts a forwarder at forward_to_device.
// 3. An app node sends to /tcp/RELAY/service/forward_to_device/service/echo: the relay forwards
//    the message along the device's connection, the device's echo answers, and the answer comes
//    back the same way.
// Run: npm run demo
import { Node, parseRoute, printRoute } from '../src/router/index.ts'
import { TcpTransport } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'

export async function main(log: (line: string) => void = console.log): Promise<string[]> {
  const replies: string[] = []
  log('step 1: start the relay node')
  const relay = await new Node({ name: 'relay' }).start()
  const relayTcp = new TcpTransport(relay)
  relay.addTransport(relayTcp)
  new RelayService(relay)
  startEcho(relay)
  const listener = await relayTcp.listen('127.0.0.1:0', { allow: ['echo', 'relay', 'forward_to_*'], transit: true })
  log(`        relay listening on tcp ${listener.address}`)

  log('step 2: start the device node and register it at the relay as "device"')
  const device = await new Node({ name: 'device' }).start()
  device.addTransport(new TcpTransport(device))
  startEcho(device)
  const registration = new RelayClient(device, { relayRoute: parseRoute(`/tcp/${listener.address}`), name: 'device', allow: ['echo'] })
  const registered = new Promise<string>((resolve, reject) => {
    registration.once('registered', (ev: { address: string }) => resolve(ev.address))
    registration.once('error', reject)
  })
  registration.start()
  log(`        device registered; the relay forwards ${await registered} to it`)

  log('step 3: an app sends messages to the device\'s echo through the relay')
  const app = await new Node({ name: 'app' }).start()
  app.addTransport(new TcpTransport(app))
  const route = parseRoute(`/tcp/${listener.address}/service/forward_to_device/service/echo`)
  log(`        route: ${printRoute(route)}`)
  for (const text of ['hello', 'from the app', 'through the relay']) {
    const started = process.hrtime.bigint()
    const reply = await app.request(route, Buffer.from(text))
    const micros = Number(process.hrtime.bigint() - started) / 1000
    const got = Buffer.from(reply.payload).toString()
    replies.push(got)
    log(`        sent "${text}" -> got "${got}" back in ${micros.toFixed(0)} µs`)
  }

  log('step 4: stop everything (app, device, relay)')
  registration.stop()
  await app.stop()
  await device.stop()
  await relay.stop()
  log('done')
  return replies
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
