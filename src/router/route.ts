/**
 * Routes: lists of addresses, and their human text syntax.
 *
 * Text syntax (multiaddr-like), one `/protocol/value` segment per hop:
 *
 * | segment                 | address            |
 * |-------------------------|--------------------|
 * | `/service/NAME`         | `0#NAME` (worker)  |
 * | `/tcp/HOST:PORT`        | `1#HOST:PORT`      |
 * | `/ws/HOST:PORT`         | `2#HOST:PORT`      |
 * | `/wss/HOST:PORT`        | `2#wss:HOST:PORT`  |
 * | `/serial/PATH...`       | `3#/PATH...` (the path runs to the next protocol keyword) |
 * | `/memory/NAME`          | `4#NAME`           |
 * | `/addr/TYPE#VALUE`      | any other address  |
 *
 * `parseRoute(printRoute(r))` gives `r` back for every route whose values the syntax can carry.
 *
 * @module
 */
import { tlError } from '../errors.ts'
import { Address, type AddressLike, address } from './address.ts'
import { ADDRESS_TYPE } from './constants.ts'

/** A route: the addresses a message visits, first hop first. */
export type Route = readonly Address[]

/** Builds a route from addresses or address texts. */
export function route(...hops: (AddressLike | readonly AddressLike[])[]): Address[] {
  const out: Address[] = []
  for (const h of hops) {
    if (Array.isArray(h)) for (const x of h as readonly AddressLike[]) out.push(address(x))
    else out.push(address(h as AddressLike))
  }
  return out
}

/** `0#a, 1#b` — the compact form used in logs. */
export function routeToString(r: Route): string {
  return `[${r.map((a) => a.text).join(', ')}]`
}

/** Protocol keywords of the route syntax. Extended by later layers through {@link registerRouteProtocol}. */
const PROTOCOLS = new Map<string, RouteProtocol>()

/** How one `/keyword/...` segment of the text syntax becomes a route segment. */
export interface RouteProtocol {
  keyword: string
  /** How many `/`-separated parts the value takes: 1, or 'rest' for a path that runs to the next keyword. */
  arity: 1 | 'rest'
  /** Turns the value into an address, or into a non-address segment; throws on a bad value. */
  parse(value: string): RouteSegment
}

/** A segment of a parsed route text: an address, or a directive a higher layer understands. */
export type RouteSegment =
  | { kind: 'address'; address: Address }
  | { kind: 'directive'; keyword: string; value: string }

/** Adds a protocol keyword to the route syntax (e.g. `secure` from the channel layer). */
export function registerRouteProtocol(p: RouteProtocol): void {
  PROTOCOLS.set(p.keyword, p)
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/

/** Checks `HOST:PORT` (IPv6 in brackets); returns it unchanged or throws ERR_TRANSPORT_ADDRESS. */
export function checkHostPort(value: string): string {
  const m = HOST_PORT.exec(value)
  if (m === null || Number(m[2]) > 65535) {
    throw tlError('ERR_TRANSPORT_ADDRESS', `"${value}" is not HOST:PORT (port 0..65535, IPv6 in brackets)`)
  }
  return value
}

/** Splits `HOST:PORT` into its parts (brackets removed from IPv6 hosts). */
export function splitHostPort(value: string): { host: string; port: number } {
  checkHostPort(value)
  const i = value.lastIndexOf(':')
  let host = value.slice(0, i)
  if (host.startsWith('[')) host = host.slice(1, -1)
  return { host, port: Number(value.slice(i + 1)) }
}

const NAME = /^[^/\s#]+$/

function addressProtocol(keyword: string, type: number, check: (v: string) => string, prefix = ''): RouteProtocol {
  return {
    keyword,
    arity: 1,
    parse: (value) => ({ kind: 'address', address: new Address(type, prefix + check(value)) }),
  }
}

function checkName(value: string): string {
  if (!NAME.test(value)) throw tlError('ERR_ADDRESS_SYNTAX', `"${value}" is not a valid name (no '/', '#' or spaces)`)
  return value
}

registerRouteProtocol(addressProtocol('service', ADDRESS_TYPE.LOCAL, checkName))
registerRouteProtocol(addressProtocol('tcp', ADDRESS_TYPE.TCP, checkHostPort))
registerRouteProtocol(addressProtocol('ws', ADDRESS_TYPE.WS, checkHostPort))
registerRouteProtocol(addressProtocol('wss', ADDRESS_TYPE.WS, checkHostPort, 'wss:'))
registerRouteProtocol(addressProtocol('memory', ADDRESS_TYPE.MEMORY, checkName))
registerRouteProtocol({
  keyword: 'serial',
  arity: 'rest',
  parse: (value) => ({ kind: 'address', address: new Address(ADDRESS_TYPE.SERIAL, `/${value}`) }),
})
registerRouteProtocol({
  keyword: 'addr',
  arity: 1,
  parse: (value) => ({ kind: 'address', address: address(value.includes('#') ? value : `0#${value}`) }),
})

/**
 * Parses route text into segments (addresses and directives such as `/secure/NAME`).
 * Throws ERR_ROUTE_SYNTAX naming the bad segment.
 */
export function parseRouteSegments(text: string): RouteSegment[] {
  if (typeof text !== 'string' || !text.startsWith('/')) {
    throw tlError('ERR_ROUTE_SYNTAX', `route "${String(text)}" must start with "/" (e.g. /tcp/127.0.0.1:4000/service/echo)`)
  }
  const parts = text.slice(1).split('/')
  const out: RouteSegment[] = []
  let i = 0
  while (i < parts.length) {
    const keyword = parts[i]!
    const segNo = out.length + 1
    const proto = PROTOCOLS.get(keyword)
    if (proto === undefined) {
      const known = [...PROTOCOLS.keys()].join(', ')
      throw tlError('ERR_ROUTE_SYNTAX', `segment ${segNo} of "${text}": unknown protocol "${keyword}" (known: ${known})`)
    }
    let value: string
    if (proto.arity === 1) {
      value = parts[i + 1] ?? ''
      i += 2
    } else {
      let j = i + 1
      while (j < parts.length && !PROTOCOLS.has(parts[j]!)) j++
      value = parts.slice(i + 1, j).join('/')
      i = j
    }
    if (value === '') {
      throw tlError('ERR_ROUTE_SYNTAX', `segment ${segNo} of "${text}": "/${keyword}" needs a value`)
    }
    try {
      out.push(proto.parse(value))
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err)
      throw tlError('ERR_ROUTE_SYNTAX', `segment ${segNo} of "${text}" ("/${keyword}/${value}"): ${why}`, { cause: err })
    }
  }
  if (out.length === 0) throw tlError('ERR_ROUTE_SYNTAX', `route "${text}" has no segments`)
  return out
}

/** Parses route text that holds addresses only. Throws ERR_ROUTE_SYNTAX on anything else. */
export function parseRoute(text: string): Address[] {
  return parseRouteSegments(text).map((s, i) => {
    if (s.kind !== 'address') {
      throw tlError('ERR_ROUTE_SYNTAX', `segment ${i + 1} of "${text}": "/${s.keyword}" is not an address here`)
    }
    return s.address
  })
}

/** Prints one address as route text. */
export function printAddress(a: Address): string {
  switch (a.type) {
    case ADDRESS_TYPE.LOCAL:
      return NAME.test(a.value) ? `/service/${a.value}` : `/addr/${a.text}`
    case ADDRESS_TYPE.TCP:
      return HOST_PORT.test(a.value) ? `/tcp/${a.value}` : `/addr/${a.text}`
    case ADDRESS_TYPE.WS:
      if (a.value.startsWith('wss:')) return `/wss/${a.value.slice(4)}`
      return HOST_PORT.test(a.value) ? `/ws/${a.value}` : `/addr/${a.text}`
    case ADDRESS_TYPE.SERIAL:
      return a.value.startsWith('/') ? `/serial${a.value}` : `/addr/${a.text}`
    case ADDRESS_TYPE.MEMORY:
      return NAME.test(a.value) ? `/memory/${a.value}` : `/addr/${a.text}`
    default:
      return `/addr/${a.text}`
  }
}

/** Prints a route as text; `parseRoute(printRoute(r))` equals `r`. */
export function printRoute(r: Route): string {
  return r.map(printAddress).join('')
}
