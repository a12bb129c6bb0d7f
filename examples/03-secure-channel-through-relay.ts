// 03 — the main demo: an end-to-end encrypted, mutually authenticated channel through a relay.
// 1. A relay node listens on TCP (127.0.0.1, a free port) with the relay service.
// 2. A device node with its own identity registers at the relay as "device" and runs a secure
//    channel listener that trusts only the app's identity.
// 3. An app opens a Noise XX channel to the device through the relay
//    (/tcp/RELAY/service/forward_to_device/secure/secure), checks the device's identifier, and
//    sends messages to the device's echo service inside the channel.
// 4. Everything the relay received is searched for the messages and the service name: the relay
//    forwarded only ciphertext.
// Run: npm run demo
import { Node, local, parseRoute } from '../src/router/index.ts'
import { TcpTransport, type ConnectionEvent, type TcpLink } from '../src/transports/index.ts'
import { RelayClient, RelayService, startEcho } from '../src/services/index.ts'
import { SecureChannels, SoftwareIdentity, trustIdentifiers } from '../src/channel/index.ts'

export interface DemoResult {
  replies: string[]
  relayBytes: number
  plaintextSeenByRelay: boolean
}

export async function main(log: (line: string) => void = console.log): Promise<DemoResult> {
  const messages = ['hello device', 'heart rate 72 bpm', 'goodbye']
  log('step 1: start the relay node')
  const relay = await new Node({ name: 'relay' }).start()
  const relayTcp = new TcpTransport(relay)
  relay.addTransport(relayTcp)
  new RelayService(relay)
  const listener = await relayTcp.listen('127.0.0.1:0', { allow: ['relay', 'forward_to_*'], transit: true })
  // record every byte the relay receives, to show what it can see
  const wiretap: Buffer[] = []
  relay.on('connection-open', (ev: ConnectionEvent) => {
    // the connection is registered right after this event; look it up once that is done
    queueMicrotask(() => {
      const conn = relayTcp.connections().find((c) => c.address.text === ev.address.text)
      ;(conn?.link as TcpLink | undefined)?.socket.on('data', (chunk: Buffer) => wiretap.push(Buffer.from(chunk)))
    })
  })
  log(`        relay listening on tcp ${listener.address}`)

  const deviceId = SoftwareIdentity.generate()
  const appId = SoftwareIdentity.generate()
  log('step 2: start the device: identity, secure listener, relay registration')
  log(`        device identity ${deviceId.identifier}`)
  const device = await new Node({ name: 'device' }).start()
  device.addTransport(new TcpTransport(device))
  startEcho(device)
  const deviceChannels = new SecureChannels(device, { identity: deviceId })
  await deviceChannels.listen('secure', { allow: ['echo'], trust: trustIdentifiers([appId.identifier]) })
  const registration = new RelayClient(device, { relayRoute: parseRoute(`/tcp/${listener.address}`), name: 'device', allow: ['secure'] })
  await new Promise<void>((resolve, reject) => {
    registration.once('registered', () => resolve())
    registration.once('error', reject)
    registration.start()
  })
  log('        registered at the relay as "device" (forward_to_device)')

  log('step 3: the app opens a secure channel to the device through the relay')
  log(`        app identity    ${appId.identifier}`)
  const app = await new Node({ name: 'app' }).start()
  app.addTransport(new TcpTransport(app))
  const appChannels = new SecureChannels(app, { identity: appId })
  const started = process.hrtime.bigint()
  const channel = await appChannels.connect(parseRoute(`/tcp/${listener.address}/service/forward_to_device/service/secure`), {
    trust: trustIdentifiers([deviceId.identifier]),
  })
  log(`        Noise XX handshake done in ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms; peer is ${channel.peer?.identifier}`)
  const replies: string[] = []
  for (const text of messages) {
    const reply = await app.request([channel.address, local('echo')], Buffer.from(text))
    replies.push(Buffer.from(reply.payload).toString())
    log(`        sent "${text}" -> echo "${replies.at(-1)}" (from ${reply.local.peer?.identifier.slice(0, 12)}…)`)
  }

  log('step 4: what did the relay see?')
  const seen = Buffer.concat(wiretap)
  const plaintextSeenByRelay = [...messages, 'echo'].some((m) => seen.includes(m))
  log(`        ${seen.length} bytes received; any message text or "echo" among them: ${plaintextSeenByRelay ? 'YES' : 'no'}`)

  channel.close()
  registration.stop()
  await app.stop()
  await device.stop()
  await relay.stop()
  log('done')
  return { replies, relayBytes: seen.length, plaintextSeenByRelay }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
