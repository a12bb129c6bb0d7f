/**
 * Addresses: a `(type: u8, value: string)` pair with the text form `type#value`.
 *
 * Type 0 is a worker on the local node; the others name a transport peer (1 TCP, 2 WebSocket,
 * 3 serial, 4 memory). Addresses are immutable and compared by their text form.
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { tlError } from '../errors.ts'
import { ADDRESS_TYPE, MAX_ADDRESS_VALUE_LENGTH } from './constants.ts'

/** An address: a type byte and a value. `text` is the canonical `type#value` form. */
export class Address {
  readonly type: number
  readonly value: string
  readonly text: string

  /** Use {@link address}, {@link local} or {@link parseAddress}; this validates its input. */
  constructor(type: number, value: string) {
    if (!Number.isInteger(type) || type < 0 || type > 255) {
      throw tlError('ERR_ADDRESS_SYNTAX', `address type must be an integer 0..255, got ${String(type)}`)
    }
    if (typeof value !== 'string' || value.length === 0) {
      throw tlError('ERR_ADDRESS_SYNTAX', 'address value must be a non-empty string')
    }
    if (Buffer.byteLength(value) > MAX_ADDRESS_VALUE_LENGTH) {
      throw tlError('ERR_ADDRESS_SYNTAX', `address value is longer than ${MAX_ADDRESS_VALUE_LENGTH} bytes`)
    }
    this.type = type
    this.value = value
    this.text = `${type}#${value}`
  }

  /** True for an address of a worker on this node (type 0). */
  get isLocal(): boolean {
    return this.type === ADDRESS_TYPE.LOCAL
  }

  equals(other: Address): boolean {
    return this.text === other.text
  }

  toString(): string {
    return this.text
  }

  toJSON(): string {
    return this.text
  }
}

/** Something that names an address: an Address, or its `type#value` text, or a bare local name. */
export type AddressLike = Address | string

/** Builds an address. A string without `#` is a local (type 0) worker name. */
export function address(a: AddressLike): Address {
  if (a instanceof Address) return a
  return parseAddress(a)
}

/** A local (type 0) address. */
export function local(name: string): Address {
  return new Address(ADDRESS_TYPE.LOCAL, name)
}

/** A random local address: 16 random bytes in hex. */
export function randomLocal(): Address {
  return new Address(ADDRESS_TYPE.LOCAL, randomBytes(16).toString('hex'))
}

const cache = new Map<string, Address>()
const CACHE_MAX = 4096

/**
 * Parses `type#value` (or a bare name, meaning type 0). Frequently seen addresses are cached,
 * so decoding the same route over and over allocates nothing.
 */
export function parseAddress(text: string): Address {
  const hit = cache.get(text)
  if (hit !== undefined) return hit
  if (typeof text !== 'string') throw tlError('ERR_ADDRESS_SYNTAX', 'address must be a string')
  const hash = text.indexOf('#')
  let result: Address
  if (hash < 0) {
    result = new Address(ADDRESS_TYPE.LOCAL, text)
  } else {
    const typeText = text.slice(0, hash)
    if (!/^\d{1,3}$/.test(typeText)) {
      throw tlError('ERR_ADDRESS_SYNTAX', `address type "${typeText}" in "${text}" is not a number 0..255`)
    }
    result = new Address(Number(typeText), text.slice(hash + 1))
  }
  if (cache.size >= CACHE_MAX) cache.clear()
  cache.set(text, result)
  return result
}
