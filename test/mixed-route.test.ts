// Issue 5, acceptance 2: one route across WebSocket, TCP and serial hops, through the CLI —
// client → WebSocket → relay node R → TCP → gateway node GW → serial line (socat pty) → device
// node DEV — to the device's echo, in the clear and inside a secure channel.
import t from 'tap'
import { ptyPair } from './helpers/pty.ts'
import { runCli, startCli } from './helpers/cli.ts'

t.test('WebSocket → relay → TCP → gateway → serial → device, via the CLI', async (t) => {
  const home = t.testdir()
  const pty = await ptyPair(`${home}/pty`)
  t.teardown(() => pty.stop())
  const devId = (await runCli(['identity', 'create', 'dev', '--home', home])).stdout.trim()
  const R = startCli(t, ['node', 'start', '--ws', '127.0.0.1:0', '--tcp', '127.0.0.1:0', '--name', 'R'])
  const [, wsAddr] = await R.waitFor(/^listening ws (127\.0\.0\.1:\d+)$/)
  const [, tcpAddr] = await R.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const GW = startCli(t, ['node', 'start', '--serial', pty.a, '--relay-at', `/tcp/${tcpAddr}`, '--relay-name', 'gw', '--name', 'GW'])
  await GW.waitFor(new RegExp(`^listening serial ${pty.a}$`))
  await GW.waitFor(/^relay registered gw$/)
  const DEV = startCli(t, ['node', 'start', '--serial', `${pty.b}@115200`, '--identity', 'dev', '--secure-listener', '--home', home, '--name', 'DEV'])
  await DEV.waitFor(new RegExp(`^listening serial ${pty.b}$`))

  const plain = await runCli(['send', '--to', `/ws/${wsAddr}/service/forward_to_gw/serial${pty.a}/service/echo`, 'hi'])
  t.equal(plain.stdout, 'hi\n', `plain: ${plain.stderr}`)
  t.equal(plain.code, 0)
  const secure = await runCli(['send', '--to', `/ws/${wsAddr}/service/forward_to_gw/serial${pty.a}/secure/secure/service/echo`, '--trust', devId, 'hi inside'])
  t.equal(secure.stdout, 'hi inside\n', `secure: ${secure.stderr}`)
  t.equal(secure.code, 0)
  for (const p of [DEV, GW, R]) t.equal(await p.stop(), 0)
})
