// The numbered examples are part of the test suite: each one's main() runs and its output is checked.
import t from 'tap'
import { main as echoOverTcp } from '../examples/01-echo-over-tcp.ts'
import { main as relayTwoHops } from '../examples/02-relay-two-hops.ts'
import { main as secureThroughRelay } from '../examples/03-secure-channel-through-relay.ts'
import { main as attestedChannel } from '../examples/04-attested-channel.ts'

t.test('01-echo-over-tcp', async (t) => {
  const lines: string[] = []
  t.equal(await echoOverTcp((l) => lines.push(l)), 'hello')
  t.match(lines[0], /^server listening on tcp 127\.0\.0\.1:\d+$/)
  t.equal(lines[1], 'client got "hello" back')
})

t.test('02-relay-two-hops', async (t) => {
  const lines: string[] = []
  t.same(await relayTwoHops((l) => lines.push(l)), ['hello', 'from the app', 'through the relay'])
  t.match(lines.join('\n'), /device registered; the relay forwards forward_to_device to it/)
  t.equal(lines.at(-1), 'done')
})

t.test('03-secure-channel-through-relay (the README demo)', async (t) => {
  const lines: string[] = []
  const r = await secureThroughRelay((l) => lines.push(l))
  t.same(r.replies, ['hello device', 'heart rate 72 bpm', 'goodbye'])
  t.ok(r.relayBytes > 0, 'the relay carried the traffic')
  t.equal(r.plaintextSeenByRelay, false, 'and saw none of it in the clear')
  t.equal(lines.at(-1), 'done')
})

t.test('04-attested-channel', async (t) => {
  const lines: string[] = []
  const r = await attestedChannel((l) => lines.push(l))
  t.same(r, { status: 'affirming', reply: 'reading 42', closedBy: 'ATTEST_VERIFIER_FAILED' })
  t.match(lines.join('\n'), /device attested: status=affirming suite=sim/)
  t.equal(lines.at(-1), 'done')
})
