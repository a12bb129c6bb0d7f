/**
 * What every transport shares: the connection registry keyed by peer (concurrent dials to one
 * peer are de-duplicated), lazy dialling when a route names a peer, a bounded queue of messages
 * waiting for a dial, persistent connections re-dialled with exponential backoff, inbound
 * connection limits, and ordered stop.
 *
 * A concrete transport implements {@link BaseTransport.dialLink} (and its own `listen`).
 *
 * @module
 */
import { tlError, type ThroughlineError, isThroughlineError } from '../errors.ts'
import { AllowList, type FlowControl } from '../router/access.ts'
import type { Logger } from '../router/logger.ts'
import type { Message } from '../router/message.ts'
import type { Node, RouterTransport } from '../router/node.ts'
import { Connection } from './connection.ts'
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_MAX_INBOUND_CONNECTIONS,
  DEFAULT_MAX_PENDING_MESSAGES,
  DEFAULT_RECONNECT_INITIAL_MS,
  DEFAULT_RECONNECT_MAX_MS,
} from './constants.ts'
import type { ConnectOptions, Link, TransportOptions } from './types.ts'

export type ResolvedTransportOptions = Required<TransportOptions>

export function resolveOptions(o: TransportOptions = {}): ResolvedTransportOptions {
  return {
    maxFrameSize: o.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    heartbeatInterval: o.heartbeatInterval ?? DEFAULT_HEARTBEAT_INTERVAL_MS,
    idleTimeout: o.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
    connectTimeout: o.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS,
    reconnectInitialDelay: o.reconnectInitialDelay ?? DEFAULT_RECONNECT_INITIAL_MS,
    reconnectMaxDelay: o.reconnectMaxDelay ?? DEFAULT_RECONNECT_MAX_MS,
    maxPendingMessages: o.maxPendingMessages ?? DEFAULT_MAX_PENDING_MESSAGES,
    maxInboundConnections: o.maxInboundConnections ?? DEFAULT_MAX_INBOUND_CONNECTIONS,
  }
}

interface PendingDial {
  promise: Promise<Connection>
  queue: Message[]
  flow: FlowControl
}

interface Persistent {
  flow: FlowControl
  delay: number
  timer: NodeJS.Timeout | undefined
  abort: AbortController
}

/** A listener handle. */
export interface Listener {
  /** The address actually bound (the real port when 0 was asked for). */
  readonly address: string
  /** The listener's flow control (its allow-list); add entries to it at run time. */
  readonly flow: AllowList
  close(): Promise<void>
}

export abstract class BaseTransport implements RouterTransport {
  abstract readonly type: number
  abstract readonly name: string
  readonly node: Node
  readonly options: ResolvedTransportOptions
  readonly logger: Logger
  #dialled = new Map<string, Connection>()
  #dialing = new Map<string, PendingDial>()
  #persistent = new Map<string, Persistent>()
  #inbound = new Set<Connection>()
  /** The last live connection connectionTo() found (a dialled connection is the only live one to its peer). */
  #lastRouted: { peer: string; conn: Connection } | undefined
  protected readonly listeners = new Set<Listener>()
  #stopped = false

  constructor(node: Node, options: TransportOptions = {}, loggerName = 'transport') {
    this.node = node
    this.options = resolveOptions(options)
    this.logger = node.logger.child(loggerName)
  }

  /** Opens a link to `peer` (the value of the transport address). */
  protected abstract dialLink(peer: string, signal: AbortSignal): Promise<Link>

  /** Checks and normalises a peer address value; throws ERR_TRANSPORT_ADDRESS. */
  protected abstract checkPeer(peer: string): string

  get stopped(): boolean {
    return this.#stopped
  }

  /** Live connections: dialled and accepted. */
  connections(): Connection[] {
    return [...this.#dialled.values(), ...this.#inbound]
  }

  /** True if a live connection to `peer` exists (routing to it needs no dial). */
  hasConnection(peer: string): boolean {
    return this.connectionTo(peer) !== undefined
  }

  /** The live dialled connection to `peer`, if any. */
  connectionTo(peer: string): Connection | undefined {
    // the last answer, remembered: a stream of sends names the same peer (string) each time
    const last = this.#lastRouted
    if (last !== undefined && last.peer === peer && !last.conn.closed) return last.conn
    const c = this.#dialled.get(peer)
    if (c === undefined || c.closed) return undefined
    this.#lastRouted = { peer, conn: c }
    return c
  }

  // ---------------------------------------------------------------- routing

  route(msg: Message): void {
    const next = msg.onward[0]!
    const peer = next.value
    const conn = this.connectionTo(peer)
    if (conn !== undefined) {
      this.#sendVia(conn, msg)
      return
    }
    let pending = this.#dialing.get(peer)
    if (pending === undefined) {
      try {
        this.checkPeer(peer)
      } catch (err) {
        this.node.drop('connection-failed', err as ThroughlineError, msg, next.text)
        return
      }
      this.#dial(peer, new AllowList(`${this.name} connection to ${peer}`)).catch(() => {})
      pending = this.#dialing.get(peer)!
    }
    if (pending.queue.length >= this.options.maxPendingMessages) {
      this.node.drop('queue-full', tlError('ERR_CONNECTION_CLOSED', `more than ${this.options.maxPendingMessages} messages wait for ${peer}`), msg, next.text)
      return
    }
    pending.queue.push(msg)
  }

  #sendVia(conn: Connection, msg: Message): void {
    // through the connection's worker address, so that backpressure applies as for any worker
    // (the connection pops the first hop, whichever address names it)
    this.node.routeTo(conn.address, msg)
  }

  /**
   * Connects to `peer` (de-duplicated with any dial in progress) and returns the connection.
   * With `persistent`, a lost connection is re-dialled with exponential backoff until
   * `disconnect(peer)` or stop.
   */
  async connect(peer: string, options: ConnectOptions = {}): Promise<Connection> {
    if (this.#stopped) throw tlError('ERR_STOPPED', `${this.name} transport is stopped`)
    peer = this.checkPeer(peer)
    // one allow-list per peer: a later connect() adds its entries to the list in use
    const existing = this.connectionTo(peer)
    const flow = existing?.flow ?? this.#persistent.get(peer)?.flow ?? this.#dialing.get(peer)?.flow ?? new AllowList(`${this.name} connection to ${peer}`)
    if (options.allow !== undefined && flow instanceof AllowList) for (const a of options.allow) flow.add(a)
    if (options.transit === true && flow instanceof AllowList) flow.transit = true
    if (options.persistent === true && !this.#persistent.has(peer)) {
      this.#persistent.set(peer, { flow, delay: this.options.reconnectInitialDelay, timer: undefined, abort: new AbortController() })
    }
    if (existing !== undefined) return existing
    const pending = this.#dialing.get(peer)
    if (pending !== undefined) return pending.promise
    return this.#dial(peer, flow, options.signal)
  }

  /** Stops re-dialling `peer` and closes the connection to it. */
  disconnect(peer: string): void {
    const p = this.#persistent.get(peer)
    if (p !== undefined) {
      clearTimeout(p.timer)
      p.abort.abort()
      this.#persistent.delete(peer)
    }
    this.#dialled.get(peer)?.close()
  }

  #dial(peer: string, flow: FlowControl, signal?: AbortSignal): Promise<Connection> {
    const timeout = AbortSignal.timeout(this.options.connectTimeout)
    const signals = [timeout]
    if (signal !== undefined) signals.push(signal)
    const p = this.#persistent.get(peer)
    if (p !== undefined) signals.push(p.abort.signal)
    const combined = AbortSignal.any(signals)
    const entry: PendingDial = { promise: undefined as unknown as Promise<Connection>, queue: [], flow }
    entry.promise = (async () => {
      let link: Link
      try {
        if (combined.aborted) throw combined.reason
        link = await this.dialLink(peer, combined)
      } catch (err) {
        let e: ThroughlineError
        if (timeout.aborted) e = tlError('ERR_TIMEOUT', `connecting to ${this.name} ${peer} took longer than ${this.options.connectTimeout} ms`, { cause: err })
        else if (combined.aborted) e = tlError('ERR_ABORTED', `connecting to ${this.name} ${peer} was aborted`, { cause: err })
        else e = isThroughlineError(err) ? err : tlError('ERR_CONNECTION_REFUSED', `cannot connect to ${this.name} ${peer}: ${(err as Error).message}`, { cause: err })
        throw e
      }
      if (this.#stopped) {
        link.close()
        throw tlError('ERR_STOPPED', `${this.name} transport stopped while dialling ${peer}`)
      }
      const conn = this.#makeConnection(link, peer, true, flow)
      this.#dialled.set(peer, conn)
      this.#dialing.delete(peer)
      conn.onClose(() => {
        if (this.#dialled.get(peer) === conn) this.#dialled.delete(peer)
        this.#scheduleRedial(peer)
      })
      const pp = this.#persistent.get(peer)
      if (pp !== undefined) pp.delay = this.options.reconnectInitialDelay
      // queued messages go first, in order, before anything routed after this point
      for (const m of entry.queue) this.#sendVia(conn, m)
      entry.queue.length = 0
      return conn
    })()
    this.#dialing.set(peer, entry)
    entry.promise.then(
      () => {},
      (err: ThroughlineError) => {
        this.#dialing.delete(peer)
        this.logger.debug('dial failed', { peer, code: err.code, error: err.message })
        for (const m of entry.queue) this.node.drop('connection-failed', err, m, `${this.name} ${peer}`)
        this.#scheduleRedial(peer)
      },
    )
    return entry.promise
  }

  #scheduleRedial(peer: string): void {
    const p = this.#persistent.get(peer)
    if (p === undefined || this.#stopped || p.timer !== undefined || this.#dialing.has(peer)) return
    const delay = Math.round(p.delay * (0.75 + Math.random() * 0.5))
    p.delay = Math.min(p.delay * 2, this.options.reconnectMaxDelay)
    p.timer = setTimeout(() => {
      p.timer = undefined
      if (this.#persistent.get(peer) !== p || this.connectionTo(peer) !== undefined) return
      this.logger.debug('re-dialling', { peer })
      this.#dial(peer, p.flow).catch(() => {})
    }, delay)
  }

  // ---------------------------------------------------------------- inbound

  /** Adopts an accepted link under a listener's flow control. Returns undefined when over the limit. */
  protected accept(link: Link, flow: FlowControl, peer: string): Connection | undefined {
    if (this.#stopped || this.#inbound.size >= this.options.maxInboundConnections) {
      this.node.drop('connection-refused', tlError('ERR_CONNECTION_REFUSED', `${this.name}: inbound connection from ${peer} refused (limit ${this.options.maxInboundConnections})`), undefined, flow.id)
      link.close()
      return undefined
    }
    const conn = this.#makeConnection(link, peer, false, flow)
    this.#inbound.add(conn)
    conn.onClose(() => this.#inbound.delete(conn))
    return conn
  }

  #makeConnection(link: Link, peer: string, dialled: boolean, flow: FlowControl): Connection {
    return new Connection(this.node, link, {
      transport: this.name,
      peer,
      dialled,
      flow,
      heartbeatInterval: this.options.heartbeatInterval,
      idleTimeout: this.options.idleTimeout,
      maxFrameSize: this.options.maxFrameSize,
      logger: this.logger,
    }).open()
  }

  // ---------------------------------------------------------------- stop

  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    for (const p of this.#persistent.values()) {
      clearTimeout(p.timer)
      p.abort.abort()
    }
    this.#persistent.clear()
    await Promise.all([...this.listeners].map((l) => l.close()))
    for (const c of this.connections()) c.close()
    await Promise.allSettled([...this.#dialing.values()].map((d) => d.promise))
  }
}
