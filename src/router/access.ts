/**
 * Access control.
 *
 * - **Flow controls** (deny by default for network input): every message that enters from a
 *   transport connection carries the connection's {@link FlowControl}; it may reach only the
 *   local addresses that flow allows (a listener's allow-list, a dialled connection's list), or a
 *   worker that accepts network input itself (a reply endpoint of `node.request()`).
 *   A flow with `transit` may also reach the node's other transport connections (a relay node);
 *   network input can never make a node dial out.
 * - **Per-address incoming/outgoing access control**: predicates a worker sets on its addresses.
 *
 * @module
 */
import type { Address } from './address.ts'
import type { Message } from './message.ts'

/** What network input of one origin may reach. */
export interface FlowControl {
  /** Shown in logs and drop reasons, e.g. `tcp listener 127.0.0.1:4000`. */
  readonly id: string
  /** May a message of this flow reach the local worker `address`? */
  allows(address: Address): boolean
  /** May messages of this flow be routed on through the node's other transport connections? */
  readonly transit: boolean
  /**
   * Optional: a number that changes whenever `allows` or `transit` may answer differently. A flow
   * with a version lets the node remember a routing decision for its messages (the transit fast
   * path) until the version changes; a flow without one is asked every time.
   */
  readonly version?: number
}

/**
 * An allow-list flow control. Entries are local worker names (`echo`), address texts (`0#echo`)
 * or prefixes ending in `*` (`forward_to_*`).
 */
export class AllowList implements FlowControl {
  readonly id: string
  readonly #exact = new Set<string>()
  readonly #prefixes: string[] = []
  #transit: boolean
  #version = 0

  constructor(id: string, entries: Iterable<string> = [], options: { transit?: boolean } = {}) {
    this.id = id
    this.#transit = options.transit ?? false
    for (const e of entries) this.add(e)
  }

  get transit(): boolean {
    return this.#transit
  }

  set transit(v: boolean) {
    if (v !== this.#transit) this.#version++
    this.#transit = v
  }

  /** Changes with every change of the entries or of `transit`. */
  get version(): number {
    return this.#version
  }

  /** Allows one more entry. */
  add(entry: string): this {
    const text = entry.includes('#') ? entry : `0#${entry}`
    if (text.endsWith('*')) this.#prefixes.push(text.slice(0, -1))
    else this.#exact.add(text)
    this.#version++
    return this
  }

  /** Removes an entry added before. */
  remove(entry: string): this {
    const text = entry.includes('#') ? entry : `0#${entry}`
    if (text.endsWith('*')) {
      const i = this.#prefixes.indexOf(text.slice(0, -1))
      if (i >= 0) this.#prefixes.splice(i, 1)
    } else this.#exact.delete(text)
    this.#version++
    return this
  }

  allows(address: Address): boolean {
    if (this.#exact.has(address.text)) return true
    for (const p of this.#prefixes) if (address.text.startsWith(p)) return true
    return false
  }

  /** The entries, for diagnostics. */
  entries(): string[] {
    return [...this.#exact, ...this.#prefixes.map((p) => `${p}*`)]
  }
}

/** A predicate on a message reaching (incoming) or leaving (outgoing) a worker's address. */
export type AccessControl = (msg: Message, address: Address) => boolean

/** Allows every message. */
export const allowAll: AccessControl = () => true
/** Allows only messages that did not enter from the network. */
export const localOnly: AccessControl = (msg) => msg.local.flow === undefined
/** Allows only messages whose authenticated peer identifier is one of `ids`. */
export function peerIn(ids: Iterable<string>): AccessControl {
  const set = new Set(ids)
  return (msg) => msg.local.peer !== undefined && set.has(msg.local.peer.identifier)
}
