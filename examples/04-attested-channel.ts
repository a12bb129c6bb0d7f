// 04 — remote attestation bound into the channel, with the simulated TPM (`sim` suite).
// 1. A device node has a simulated platform: PCRs from a measured boot, an event log, and an
//    attestation key certified by a (test) sim root.
// 2. An app opens a secure channel that requires sim evidence of the device, appraised by a local
//    verifier that trusts the sim root and knows the device's reference PCR values.
// 3. The device's quote is bound to this very handshake (the handle comes from the Noise
//    handshake hash and the device's static key): the channel opens and data flows.
// 4. The device's platform changes at run time (an unlogged PCR extend); the next re-attestation
//    round fails and the channel closes on both ends with ATTEST_VERIFIER_FAILED.
// Run: npm run example -- 04-attested-channel
import { Node, local, route } from '../src/router/index.ts'
import { MemoryNetwork, MemoryTransport } from '../src/transports/index.ts'
import { startEcho } from '../src/services/index.ts'
import { SecureChannels, SoftwareIdentity, type SecureChannel } from '../src/channel/index.ts'
import { ReferenceValues, SimAttester, SimPlatform, SimRoot, Verifier } from '../src/attest/index.ts'
import type { ThroughlineError } from '../src/errors.ts'

export interface AttestDemoResult {
  status: string | undefined
  reply: string
  closedBy: string | undefined
}

export async function main(log: (line: string) => void = console.log): Promise<AttestDemoResult> {
  const network = new MemoryNetwork()
  const keepAlive = setInterval(() => {}, 1_000) // the in-memory transport holds no socket open
  try {
    log('step 1: a device with a simulated platform (measured boot, event log, certified AK)')
    const root = SimRoot.generate('example-root')
    const platform = new SimPlatform({ root })
    const device = await new Node({ name: 'device' }).start()
    device.addTransport(new MemoryTransport(device, { network }))
    await (device.transport(4) as MemoryTransport).listen('device', { allow: ['secure'] })
    startEcho(device)
    const deviceChannels = new SecureChannels(device, { identity: SoftwareIdentity.generate(), attestation: { attesters: [new SimAttester(platform)] } })
    const deviceListener = await deviceChannels.listen('secure', { allow: ['echo'] })
    for (const [pcr, value] of platform.pcrValues()) log(`        PCR ${String(pcr).padStart(2)} ${Buffer.from(value).toString('hex')}`)

    log('step 2: an app requires sim evidence, appraised against the reference values')
    const verifier = new Verifier({
      id: 'example-verifier',
      trustAnchors: { simRoots: [root.publicKeySpki] },
      referenceValues: new ReferenceValues([platform.referenceSet('device-v1')]),
      policy: { id: 'example', trustSim: true }, // sim evidence is never affirming by default
    })
    const app = await new Node({ name: 'app' }).start()
    app.addTransport(new MemoryTransport(app, { network }))
    const appChannels = new SecureChannels(app, { identity: SoftwareIdentity.generate() })
    const deviceSide = new Promise<SecureChannel>((resolve) => deviceListener.once('channel', resolve))
    const channel = await appChannels.connect(route('4#device', 'secure'), {
      attestation: { require: ['sim'], verifier, reattestInterval: 300 },
    })
    const result = channel.attestation
    log(`step 3: channel open; device attested: status=${result?.status} suite=${result?.suite} handle=${Buffer.from(result?.nonce ?? []).toString('hex').slice(0, 16)}…`)
    const reply = Buffer.from((await app.request([channel.address, local('echo')], Buffer.from('reading 42'), { timeout: 3_000 })).payload).toString()
    log(`        echo through the channel: "${reply}"`)

    log('step 4: the device platform changes at run time (an unlogged extend of PCR 10)')
    const closedApp = new Promise<ThroughlineError>((resolve) => channel.once('close', resolve))
    const closedDevice = new Promise<ThroughlineError>((resolve) => void deviceSide.then((ch) => ch.once('close', resolve)))
    platform.extend(10, Buffer.alloc(32, 0xee))
    const [appErr, deviceErr] = await Promise.all([closedApp, closedDevice])
    log(`        app:    ${appErr.message}`)
    log(`        device: ${deviceErr.message}`)
    await app.stop()
    await device.stop()
    log('done')
    return { status: result?.status, reply, closedBy: String(deviceErr.details?.['cause']) }
  } finally {
    clearInterval(keepAlive)
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
