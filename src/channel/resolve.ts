/**
 * Turns route text with `/secure/NAME` directives into a route of addresses, opening the secure
 * channels on the way: `/tcp/R/service/forward_to_d/secure/secure/service/echo` opens a channel
 * to `[1#R, 0#forward_to_d, 0#secure]` and yields `[0#<channel>, 0#echo]`. Channels nest: a later
 * `/secure/...` is opened through the earlier channel.
 *
 * @module
 */
import { tlError } from '../errors.ts'
import type { Address } from '../router/address.ts'
import { local } from '../router/address.ts'
import { parseRouteSegments } from '../router/route.ts'
import type { ChannelConnectOptions, SecureChannel, SecureChannels } from './secure-channel.ts'

export interface ResolvedRoute {
  route: Address[]
  channels: SecureChannel[]
}

export async function resolveRoute(text: string, channels: SecureChannels | undefined, options: ChannelConnectOptions = {}): Promise<ResolvedRoute> {
  const segments = parseRouteSegments(text)
  let acc: Address[] = []
  const opened: SecureChannel[] = []
  for (const seg of segments) {
    if (seg.kind === 'address') {
      acc.push(seg.address)
      continue
    }
    if (seg.keyword !== 'secure') throw tlError('ERR_ROUTE_SYNTAX', `"/${seg.keyword}" cannot be resolved here`)
    if (channels === undefined) throw tlError('ERR_ROUTE_SYNTAX', '"/secure/..." needs an identity (secure channels are not set up)')
    if (acc.length === 0) throw tlError('ERR_ROUTE_SYNTAX', `"/secure/${seg.value}" needs a route before it`)
    const ch = await channels.connect([...acc, local(seg.value)], options)
    opened.push(ch)
    acc = [ch.address]
  }
  return { route: acc, channels: opened }
}
