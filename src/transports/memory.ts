/**
 * The in-memory transport: nodes in one process connected by link pairs. Addresses
 * `4#NAME`; route text `/memory/NAME`. Frames are copied on write, as a wire would, and delivered
 * on a later turn of the event loop; a receiver that is paused stops delivery and a full inbox
 * makes the sender wait for drain, so backpressure behaves as it does on TCP.
 *
 * @module
 */
import { tlError, type ThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { ADDRESS_TYPE } from '../router/constants.ts'
import type { Node } from '../router/node.ts'
import { BaseTransport, type Listener } from './base.ts'
import type { Link, ListenOptions, TransportOptions } from './types.ts'

/** Bytes in a link's inbox before its sender is told to wait. */
const INBOX_HIGH_WATER = 1024 * 1024

/** One end of an in-memory link pair. */
export class MemoryLink implements Link {
  readonly remote: string
  peer!: MemoryLink
  #inbox: Uint8Array[] = []
  #inboxBytes = 0
  #paused = false
  #scheduled = false
  #closed = false
  #senderBlocked = false
  onFrame: (frame: Uint8Array) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}
  /** Sees every frame this end sends (`out`) and receives (`in`): a wiretap for tests and debugging. */
  observer: ((direction: 'in' | 'out', frame: Uint8Array) => void) | undefined

  constructor(remote: string) {
    this.remote = remote
  }

  /** Makes a connected pair. */
  static pair(aName: string, bName: string): [MemoryLink, MemoryLink] {
    const a = new MemoryLink(bName)
    const b = new MemoryLink(aName)
    a.peer = b
    b.peer = a
    return [a, b]
  }

  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    if (this.#closed) return true
    const frame = Buffer.allocUnsafe(head.length + payload.length)
    head.copy(frame, 0)
    frame.set(payload, head.length)
    this.observer?.('out', frame)
    return this.peer.#receive(frame)
  }

  writeHeartbeat(): void {
    if (!this.#closed) this.peer.#receive(new Uint8Array(0))
  }

  /** Injects raw frame bytes as if the peer had sent them (tests). */
  inject(frame: Uint8Array): void {
    this.#receive(frame)
  }

  #receive(frame: Uint8Array): boolean {
    if (this.#closed) return true
    this.observer?.('in', frame)
    this.#inbox.push(frame)
    this.#inboxBytes += frame.length
    this.#schedule()
    if (this.#inboxBytes >= INBOX_HIGH_WATER) {
      this.#senderBlocked = true
      return false
    }
    return true
  }

  #schedule(): void {
    if (this.#scheduled || this.#paused) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#deliver()
    })
  }

  #deliver(): void {
    while (!this.#paused && !this.#closed && this.#inbox.length > 0) {
      const f = this.#inbox.shift()!
      this.#inboxBytes -= f.length
      this.onFrame(f)
    }
    if (this.#senderBlocked && this.#inboxBytes < INBOX_HIGH_WATER / 2) {
      this.#senderBlocked = false
      this.peer.onDrain()
    }
  }

  pause(): void {
    this.#paused = true
  }

  resume(): void {
    this.#paused = false
    this.#schedule()
  }

  close(error?: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    this.#inbox = []
    this.onClose(error)
    this.peer.#remoteClosed()
  }

  #remoteClosed(): void {
    if (this.#closed) return
    // deliver what is already in flight, then close
    setImmediate(() => {
      this.#deliver()
      if (this.#closed) return
      this.#closed = true
      this.onClose(undefined)
    })
  }
}

/** A namespace of memory listeners (default: one per process). */
export class MemoryNetwork {
  readonly listeners = new Map<string, (link: MemoryLink) => void>()
}

export const defaultMemoryNetwork = new MemoryNetwork()

let counter = 0

/** The in-memory transport. */
export class MemoryTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.MEMORY
  readonly name = 'memory'
  readonly network: MemoryNetwork
  readonly observe: ((direction: 'in' | 'out', frame: Uint8Array) => void) | undefined

  /**
   * @param options.network the namespace of listeners (default: one per process)
   * @param options.observe sees every frame this node's memory links send and receive
   */
  constructor(node: Node, options: TransportOptions & { network?: MemoryNetwork; observe?: (direction: 'in' | 'out', frame: Uint8Array) => void } = {}) {
    super(node, options, 'memory')
    this.network = options.network ?? defaultMemoryNetwork
    this.observe = options.observe
  }

  protected checkPeer(peer: string): string {
    if (!/^[^/\s#]+$/.test(peer)) throw tlError('ERR_TRANSPORT_ADDRESS', `"${peer}" is not a memory listener name`)
    return peer
  }

  protected async dialLink(peer: string): Promise<Link> {
    const accept = this.network.listeners.get(peer)
    if (accept === undefined) throw tlError('ERR_CONNECTION_REFUSED', `no memory listener named "${peer}"`)
    const [mine, theirs] = MemoryLink.pair(`${this.node.name}#${++counter}`, peer)
    mine.observer = this.observe
    accept(theirs)
    return mine
  }

  /** Listens under `name`. */
  async listen(name: string, options: ListenOptions = {}): Promise<Listener> {
    this.checkPeer(name)
    if (this.network.listeners.has(name)) throw tlError('ERR_LISTEN_FAILED', `memory listener "${name}" exists`)
    const flow = new AllowList(`memory listener ${name}`, options.allow ?? [], { transit: options.transit ?? false })
    this.network.listeners.set(name, (link) => {
      link.observer = this.observe
      this.accept(link, flow, link.remote)
    })
    const listener: Listener = {
      address: name,
      flow,
      close: async () => {
        this.listeners.delete(listener)
        this.network.listeners.delete(name)
      },
    }
    this.listeners.add(listener)
    return listener
  }
}
