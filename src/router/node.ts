/**
 * The Node runtime: workers with addresses and bounded mailboxes, source routing, access control,
 * hand-off to transports, request/response, and ordered shutdown.
 *
 * Hop rule (as in Ockam): a worker that forwards pops itself off the onward route; a transport
 * that receives a frame pushes its connection's local address onto the return route, so replies
 * find the way back. There are no routing tables.
 *
 * Backpressure: a message that entered from the network remembers its producer (the
 * connection). When any mailbox it reaches is full (or a connection it is written to cannot take
 * more), that producer is paused until the destination drains. Producers count pauses.
 *
 * Every dropped message is counted by reason in `node.stats.drops`, logged, and emitted as a
 * `drop` event — never silent.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { tlError, ThroughlineError } from '../errors.ts'
import { type AccessControl, type FlowControl } from './access.ts'
import { Address, type AddressLike, address, randomLocal } from './address.ts'
import {
  ADDRESS_TYPE,
  DEFAULT_MAILBOX_CAPACITY,
  DEFAULT_MAX_HEADER_SIZE,
  DEFAULT_MAX_ROUTE_LENGTH,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_STOP_GRACE_MS,
  MAX_INLINE_DEPTH,
} from './constants.ts'
import { type Logger, debugLogger } from './logger.ts'
import type { LocalInfo, Message, Producer } from './message.ts'
import { type Route, routeToString } from './route.ts'
import { byteView } from './codec.ts'

/** A worker: handles the messages sent to any of its addresses, one at a time. */
export interface Worker {
  /** Handles one message. A returned promise is awaited before the next message is handled. */
  handleMessage(ctx: WorkerContext, msg: Message): void | Promise<void>
  /** Called once when the worker is stopped (node shutdown or `stopWorker`). */
  onStop?(ctx: WorkerContext): void | Promise<void>
}

/**
 * A synchronous sink (a transport connection's writer): takes each message at once and returns
 * false when it cannot take more until it calls `ctx.drained()`.
 */
export interface SinkWorker {
  readonly sink: true
  handleMessage(ctx: WorkerContext, msg: Message): boolean
  onStop?(ctx: WorkerContext): void | Promise<void>
  /**
   * Optional (transport connections): a writer for messages that will reach this sink with
   * exactly these routes, their encoding done once — for route plans ({@link Node.planRoute}).
   */
  transitWriter?(onward: readonly Address[], ret: readonly Address[]): TransitWriter | undefined
}

/** Writes payloads behind a head encoded once (see {@link SinkWorker.transitWriter}). */
export interface TransitWriter {
  /** The largest payload that fits one frame behind this head. */
  readonly maxPayload: number
  /** Writes one message with the payload `buf[start, end)`; false when the sink is full (as its handleMessage). */
  write(buf: Uint8Array, start: number, end: number): boolean
  /** Optional: as `write`, with the payload `pieces[0][start…]` then the other pieces (`length` bytes in all). */
  writePieces?(pieces: readonly Uint8Array[], start: number, length: number): boolean
}

/**
 * A forwarder (see {@link Node.startForwarder}): a worker that replaces its own address on each
 * message with `route` and sends it on under `flow`.
 */
export interface Forwarder {
  readonly address: Address
  /** The route put in front of the rest of each message's onward route. Setting it takes effect at once. */
  route: readonly Address[]
  stop(): Promise<void>
}

export interface ForwarderOptions {
  /** Shutdown layer. Default `app`. */
  layer?: Layer
  /**
   * The flow control of what the forwarder sends on (it replaces the sender's). Default none:
   * what it forwards may go wherever its route leads (a relay's `forward_to_NAME`).
   */
  flow?: FlowControl
  /** Takes the messages that end at the forwarder (its route is empty and nothing follows it). */
  onEnd?: (msg: Message) => void
  /** Called once when the forwarder stops. */
  onStop?: () => void
}

/**
 * A routing decision remembered for a stream of frames that all carry one header (the fast path
 * of a transport connection): made by {@link Node.planRoute}, used by {@link Node.runPlan}.
 * Opaque outside the node.
 */
export interface RoutePlan {
  /** Every flow control consulted, and its version then. */
  readonly flows: readonly FlowControl[]
  readonly versions: readonly (number | undefined)[]
  readonly forwarders: readonly WorkerEntry[]
  /** Each forwarder's route then (a forwarder's new route is a new array). */
  readonly routes: readonly (readonly Address[])[]
  /** Where the message ends: a sink with a pre-encoded writer, or a worker. */
  readonly target: WorkerEntry
  readonly writer: TransitWriter | undefined
  /** For a worker target: the routes and metadata its messages arrive with (frozen, shared). */
  readonly onward: readonly Address[]
  readonly return: readonly Address[]
  readonly local: LocalInfo
}

/** Shutdown layers, stopped in this order. */
export type Layer = 'app' | 'service' | 'channel' | 'transport'
const LAYERS: readonly Layer[] = ['app', 'service', 'channel', 'transport']

export interface WorkerOptions {
  /** Checked for every message reaching one of the worker's addresses. */
  incoming?: AccessControl
  /** Checked for every message the worker sends or forwards. */
  outgoing?: AccessControl
  /** Reachable by network input of any flow (reply endpoints). Default false. */
  acceptsNetwork?: boolean
  /** Messages queued before producers are paused. Default {@link DEFAULT_MAILBOX_CAPACITY}. */
  mailboxCapacity?: number
  /** Shutdown layer. Default `app`. */
  layer?: Layer
}

/** What a worker can do: send, forward, reply, and stop itself. */
export interface WorkerContext {
  readonly node: Node
  /** The worker's first address. */
  readonly address: Address
  readonly addresses: readonly Address[]
  /** Sends a new message (local origin) from this worker; the return route defaults to its address. */
  send(onward: Route, payload: Uint8Array, options?: { returnRoute?: Route; local?: LocalInfo }): void
  /** Sends `payload` back along `msg`'s return route. */
  reply(msg: Message, payload: Uint8Array): void
  /**
   * Forwards a message on: pops this worker off the onward route (unless `onward` is given)
   * and keeps its node-local metadata, so flow restrictions and backpressure carry on.
   */
  forward(msg: Message, changes?: { onward?: Route; return?: Route; local?: LocalInfo }): void
  /** For sink workers: the sink can take messages again. */
  drained(): void
  /** Stops this worker. */
  stop(): Promise<void>
}

/** A transport as the router sees it: it takes messages whose next hop is of its address type. */
export interface RouterTransport {
  readonly type: number
  readonly name: string
  /** Routes `msg`, whose `onward[0]` is of this transport's type. Drops through `node.drop()`. */
  route(msg: Message): void
  /** Is there a live connection to `peer` (the address value) — one that routing needs not dial? */
  hasConnection?(peer: string): boolean
  /** Closes listeners and connections. */
  stop(): Promise<void>
}

/** Drop reasons, each counted in `node.stats.drops`. */
export type DropReason =
  | 'empty-route'
  | 'no-such-address'
  | 'no-transport'
  | 'flow-denied'
  | 'incoming-denied'
  | 'outgoing-denied'
  | 'worker-error'
  | 'worker-stopped'
  | 'decode-error'
  | 'connection-failed'
  | 'connection-closed'
  | 'queue-full'
  | 'node-stopped'
  | (string & {})

/** A `drop` event. */
export interface DropEvent {
  reason: DropReason
  error: ThroughlineError | undefined
  message: Message | undefined
  /** Where it happened: a worker address, a connection, a listener. */
  at: string | undefined
}

export interface NodeStats {
  drops: Record<string, number>
  delivered: number
  workerErrors: number
}

export interface NodeLimits {
  maxRouteLength: number
  maxHeaderSize: number
  mailboxCapacity: number
}

export interface NodeOptions {
  /** A name for logs. */
  name?: string
  logger?: Logger
  limits?: Partial<NodeLimits>
  /** Time source (ms). Default `Date.now`. */
  now?: () => number
  /**
   * Let transport connections route frames that repeat a header by a remembered plan
   * ({@link Node.planRoute}) instead of decoding and routing each one. Same results, less work per
   * message; turn it off to compare, or to debug routing. Default true.
   */
  fastPath?: boolean
}

class WorkerEntry {
  /** Set for forwarders (startForwarder): the route that replaces the forwarder's address, and the flow of what it sends. */
  forwarder: { route: readonly Address[]; flow: FlowControl | undefined } | undefined
  readonly queue: Message[] = []
  head = 0
  running = false
  scheduled = false
  stopped = false
  readonly waiting = new Set<Producer>()
  ctx!: WorkerContext
  idleWaiters: (() => void)[] = []
  readonly worker: Worker | SinkWorker
  readonly addresses: readonly Address[]
  readonly options: WorkerOptions
  readonly capacity: number
  constructor(worker: Worker | SinkWorker, addresses: readonly Address[], options: WorkerOptions, capacity: number) {
    this.worker = worker
    this.addresses = addresses
    this.options = options
    this.capacity = capacity
  }
  get isSink(): boolean {
    return (this.worker as SinkWorker).sink === true
  }
  get queued(): number {
    return this.queue.length - this.head
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function'
}

const EMPTY_LOCAL: LocalInfo = Object.freeze({}) as LocalInfo
/**
 * Does network input of `flow` stay away from the worker `entry` at `next`? It may reach a worker
 * that accepts network input, one its flow allows, or — with transit — a transport connection.
 */
function flowRefuses(flow: FlowControl, entry: WorkerEntry, next: Address): boolean {
  return !entry.options.acceptsNetwork && !flow.allows(next) && !(flow.transit && entry.options.layer === 'transport')
}

/** A forwarder's onward route for a message: its `route`, then the rest of `onward` after the forwarder (no concat/slice: hot path). */
function forwardedRoute(route: readonly Address[], onward: readonly Address[]): Address[] {
  const out = new Array<Address>(route.length + onward.length - 1)
  let i = 0
  for (; i < route.length; i++) out[i] = route[i]!
  for (let j = 1; j < onward.length; j++) out[i++] = onward[j]!
  return out
}

/** Most forwarders one transit plan passes through. */
const MAX_PLANNED_FORWARDERS = 4

/**
 * A throughline node. Create, `start()`, add transports and workers, `send()`, and `stop()`.
 *
 * Events: `drop` ({@link DropEvent}), `connection-open` / `connection-closed` (the connection's
 * local Address).
 */
export class Node extends EventEmitter {
  readonly name: string
  readonly logger: Logger
  readonly limits: NodeLimits
  readonly stats: NodeStats = { drops: {}, delivered: 0, workerErrors: 0 }
  readonly now: () => number
  /** See {@link NodeOptions.fastPath}. */
  readonly fastPath: boolean
  #workers = new Map<string, WorkerEntry>()
  #transports = new Map<number, RouterTransport>()
  #state: 'new' | 'running' | 'stopping' | 'stopped' = 'new'
  #depth = 0
  #pendingRequests = new Set<(err: Error) => void>()

  constructor(options: NodeOptions = {}) {
    super()
    this.name = options.name ?? 'node'
    this.logger = options.logger ?? debugLogger('throughline')
    this.limits = {
      maxRouteLength: options.limits?.maxRouteLength ?? DEFAULT_MAX_ROUTE_LENGTH,
      maxHeaderSize: options.limits?.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE,
      mailboxCapacity: options.limits?.mailboxCapacity ?? DEFAULT_MAILBOX_CAPACITY,
    }
    this.now = options.now ?? Date.now
    this.fastPath = options.fastPath ?? true
  }

  /** Starts the node. Idempotent. */
  async start(): Promise<this> {
    if (this.#state === 'new') this.#state = 'running'
    return this
  }

  get running(): boolean {
    return this.#state === 'running'
  }

  #assertRunning(): void {
    if (this.#state !== 'running') throw tlError('ERR_NOT_STARTED', `node ${this.name} is ${this.#state}`)
  }

  // ------------------------------------------------------------------ transports

  /** Registers the transport that handles addresses of `transport.type`. */
  addTransport(transport: RouterTransport): void {
    if (this.#transports.has(transport.type)) {
      throw tlError('ERR_ADDRESS_IN_USE', `a transport for address type ${transport.type} is already registered`)
    }
    this.#transports.set(transport.type, transport)
  }

  /** The transport registered for an address type. */
  transport(type: number): RouterTransport | undefined {
    return this.#transports.get(type)
  }

  // ------------------------------------------------------------------ workers

  /**
   * Starts a worker on one or more addresses (names, `type#value` texts or Addresses; local only).
   * Returns the worker's context.
   */
  startWorker(addresses: AddressLike | readonly AddressLike[], worker: Worker | SinkWorker, options: WorkerOptions = {}): WorkerContext {
    return this.#addWorker(addresses, worker, options).ctx
  }

  /**
   * Starts a forwarder at `addr`: each message reaching it continues along `route` followed by the
   * rest of its own onward route (its return route unchanged), under `options.flow` instead of
   * the sender's flow (default: none — it may go wherever `route` leads, as from a relay's
   * `forward_to_NAME`). What it forwards keeps its producer (backpressure) and connection.
   * Unlike a worker that forwards, a forwarder is known to the transports' fast path
   * ({@link planRoute}), which then forwards a stream's frames without decoding them again.
   */
  startForwarder(addr: AddressLike, route: readonly Address[], options: ForwarderOptions = {}): Forwarder {
    const state = { route: Object.freeze([...route]) as readonly Address[], flow: options.flow }
    const onEnd = options.onEnd
    const onStop = options.onStop
    const entry = this.#addWorker(
      addr,
      {
        handleMessage: (ctx, m) => {
          if (state.route.length + m.onward.length - 1 === 0 && onEnd !== undefined) {
            onEnd(m)
            return
          }
          ctx.forward(m, { onward: forwardedRoute(state.route, m.onward), local: { flow: state.flow, producer: m.local.producer, connection: m.local.connection } })
        },
        ...(onStop === undefined ? {} : { onStop }),
      },
      options.layer === undefined ? {} : { layer: options.layer },
    )
    entry.forwarder = state
    return {
      address: entry.ctx.address,
      get route() {
        return state.route
      },
      set route(r: readonly Address[]) {
        state.route = Object.freeze([...r]) // a new array: route plans made with the old one see the change
      },
      stop: () => entry.ctx.stop(),
    }
  }

  #addWorker(addresses: AddressLike | readonly AddressLike[], worker: Worker | SinkWorker, options: WorkerOptions): WorkerEntry {
    this.#assertRunning()
    const list = (Array.isArray(addresses) ? addresses : [addresses]).map((a: AddressLike) => address(a))
    if (list.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'a worker needs at least one address')
    for (const a of list) {
      if (a.type !== ADDRESS_TYPE.LOCAL) throw tlError('ERR_INVALID_ARGUMENT', `worker address ${a.text} is not local (type 0)`)
      if (this.#workers.has(a.text)) throw tlError('ERR_ADDRESS_IN_USE', `address ${a.text} is already taken`)
    }
    const entry = new WorkerEntry(worker, list, options, options.mailboxCapacity ?? this.limits.mailboxCapacity)
    entry.ctx = this.#makeContext(entry)
    for (const a of list) this.#workers.set(a.text, entry)
    return entry
  }

  /** True if a worker has this address. */
  hasWorker(a: AddressLike): boolean {
    return this.#workers.has(address(a).text)
  }

  /** Stops the worker that has `a` (all its addresses). */
  async stopWorker(a: AddressLike): Promise<void> {
    const entry = this.#workers.get(address(a).text)
    if (entry === undefined) return
    await this.#stopEntry(entry)
  }

  async #stopEntry(entry: WorkerEntry): Promise<void> {
    if (entry.stopped) return
    entry.stopped = true
    for (const a of entry.addresses) if (this.#workers.get(a.text) === entry) this.#workers.delete(a.text)
    // messages still queued are dropped, counted
    for (let i = entry.head; i < entry.queue.length; i++) {
      this.drop('worker-stopped', undefined, entry.queue[i], entry.addresses[0]!.text)
    }
    entry.queue.length = 0
    entry.head = 0
    this.#release(entry)
    if (entry.running) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, DEFAULT_STOP_GRACE_MS)
        entry.idleWaiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    }
    try {
      await entry.worker.onStop?.(entry.ctx)
    } catch (err) {
      this.logger.warn('worker onStop failed', { worker: entry.addresses[0]!.text, error: err })
    }
  }

  #makeContext(entry: WorkerEntry): WorkerContext {
    const primary = entry.addresses[0]!
    const outgoing = (msg: Message): boolean => {
      if (entry.options.outgoing !== undefined && !entry.options.outgoing(msg, primary)) {
        this.drop('outgoing-denied', tlError('ERR_ACCESS_DENIED', `outgoing access control of ${primary.text} refused a message to ${msg.onward[0]?.text}`), msg, primary.text)
        return false
      }
      return true
    }
    return {
      node: this,
      address: primary,
      addresses: entry.addresses,
      send: (onward, payload, options) => {
        const msg: Message = { onward, return: options?.returnRoute ?? [primary], payload, local: options?.local ?? EMPTY_LOCAL }
        if (outgoing(msg)) this.route(msg)
      },
      reply: (msg, payload) => {
        const out: Message = { onward: msg.return, return: [primary], payload, local: EMPTY_LOCAL }
        if (outgoing(out)) this.route(out)
      },
      forward: (msg, changes) => {
        const out: Message = {
          onward: changes?.onward ?? msg.onward.slice(1),
          return: changes?.return ?? msg.return,
          payload: msg.payload,
          local: changes?.local ?? msg.local,
        }
        if (outgoing(out)) this.route(out)
      },
      drained: () => this.#release(entry),
      stop: () => this.#stopEntry(entry),
    }
  }

  // ------------------------------------------------------------------ routing

  /**
   * Sends a message of local origin. `from` is used as the return route (default: none, so a
   * reply is impossible); see {@link request} for request/response.
   */
  send(onward: Route, payload: Uint8Array, options: { returnRoute?: Route; local?: LocalInfo } = {}): void {
    this.#assertRunning()
    this.route({ onward, return: options.returnRoute ?? [], payload, local: options.local ?? EMPTY_LOCAL })
  }

  /** Routes a message by its next hop. Drops (counted, logged) what cannot be routed. */
  route(msg: Message): void {
    if (this.#state !== 'running') {
      this.drop('node-stopped', tlError('ERR_STOPPED', `node ${this.name} is ${this.#state}`), msg, undefined)
      return
    }
    const next = msg.onward[0]
    if (next === undefined) {
      this.drop('empty-route', tlError('ERR_ROUTE_EMPTY', 'message has an empty onward route'), msg, undefined)
      return
    }
    if (msg.onward.length > this.limits.maxRouteLength || msg.return.length > this.limits.maxRouteLength) {
      this.drop('route-too-long', tlError('ERR_ROUTE_TOO_LONG', `route longer than ${this.limits.maxRouteLength} hops`), msg, next.text)
      return
    }
    const flow = msg.local.flow
    if (next.type !== ADDRESS_TYPE.LOCAL) {
      const transport = this.#transports.get(next.type)
      // network input never makes the node dial; a transit flow may use a connection that exists
      if (flow !== undefined && !(flow.transit && transport?.hasConnection?.(next.value) === true)) {
        this.drop('flow-denied', tlError('ERR_ACCESS_DENIED', `network input (${flow.id}) may not open connections (to ${next.text})`), msg, next.text)
        return
      }
      if (transport === undefined) {
        this.drop('no-transport', tlError('ERR_NO_TRANSPORT', `no transport for address type ${next.type} (${next.text})`), msg, next.text)
        return
      }
      transport.route(msg)
      return
    }
    this.#routeLocal(next, msg)
  }

  /**
   * For transports: routes `msg`, whose next hop names a peer, to the local worker `to` (the
   * connection to that peer), as {@link route} routes a message whose next hop is `to` — the same
   * checks, counts and backpressure — without building a new message for it.
   */
  routeTo(to: Address, msg: Message): void {
    if (this.#state !== 'running') {
      this.drop('node-stopped', tlError('ERR_STOPPED', `node ${this.name} is ${this.#state}`), msg, undefined)
      return
    }
    this.#routeLocal(to, msg)
  }

  #routeLocal(next: Address, msg: Message): void {
    const flow = msg.local.flow
    const entry = this.#workers.get(next.text)
    if (entry === undefined) {
      this.drop('no-such-address', tlError('ERR_NO_SUCH_ADDRESS', `no worker at ${next.text}`), msg, next.text)
      return
    }
    if (flow !== undefined && flowRefuses(flow, entry, next)) {
      this.drop('flow-denied', tlError('ERR_ACCESS_DENIED', `${flow.id} does not allow ${next.text}`), msg, next.text)
      return
    }
    if (entry.options.incoming !== undefined && !entry.options.incoming(msg, next)) {
      this.drop('incoming-denied', tlError('ERR_ACCESS_DENIED', `incoming access control of ${next.text} refused the message`), msg, next.text)
      return
    }
    this.#enqueue(entry, msg)
  }

  // ------------------------------------------------------------------ fast path of repeated headers

  /**
   * Works out, without sending anything, where {@link route} would take a message that arrived
   * from the network with these routes and node-local metadata, when the way is through
   * forwarders only (none or more) and ends
   * - at a sink that writes pre-encoded frames (a relay hop: connection → `forward_to_NAME` →
   *   connection), or
   * - at a worker (a device: connection → its relay client → `sink`),
   * with no access-control predicate on the way. Returns undefined otherwise. A transport
   * connection plans once for a header that repeats, then hands each further frame with that
   * header to {@link runPlan}. The plan holds ({@link planHolds}) while the node runs, no worker
   * on its way has stopped, no forwarder on it has a new route and every consulted flow keeps its
   * version. (A worker started since cannot change it: a plan's addresses were all taken.)
   */
  planRoute(onward: readonly Address[], ret: readonly Address[], local: LocalInfo): RoutePlan | undefined {
    if (this.#state !== 'running' || !this.fastPath) return undefined
    let o = onward
    let loc = local
    const flows: FlowControl[] = []
    const versions: (number | undefined)[] = []
    const forwarders: WorkerEntry[] = []
    const routes: (readonly Address[])[] = []
    for (let hop = 0; hop <= MAX_PLANNED_FORWARDERS; hop++) {
      // what route() checks, in its order
      const next = o[0]
      if (next === undefined || next.type !== ADDRESS_TYPE.LOCAL) return undefined
      if (o.length > this.limits.maxRouteLength || ret.length > this.limits.maxRouteLength) return undefined
      const entry = this.#workers.get(next.text)
      if (entry === undefined) return undefined
      const flow = loc.flow
      if (flow !== undefined) {
        if (flow.version === undefined) return undefined
        flows.push(flow)
        versions.push(flow.version)
        if (flowRefuses(flow, entry, next)) return undefined
      }
      if (entry.options.incoming !== undefined) return undefined
      const plan = { flows, versions, forwarders, routes, target: entry, onward: o, return: ret, local: loc }
      if (entry.isSink) {
        const writer = (entry.worker as SinkWorker).transitWriter?.(o, ret)
        return writer === undefined ? undefined : { ...plan, writer }
      }
      const fw = entry.forwarder
      if (fw === undefined) {
        return { ...plan, writer: undefined, onward: Object.freeze(o.slice()), return: Object.freeze(ret.slice()), local: Object.freeze({ ...loc }) }
      }
      if (entry.options.outgoing !== undefined || fw.route.length + o.length - 1 === 0) return undefined
      // what the forwarder does: its route, then the rest, under its own flow
      o = forwardedRoute(fw.route, o)
      loc = { flow: fw.flow, producer: loc.producer, connection: loc.connection }
      forwarders.push(entry)
      routes.push(fw.route)
    }
    return undefined
  }

  /**
   * Delivers one message, whose payload is `buf[start, end)`, by a plan from {@link planRoute}, as route() would: counted, written by
   * the plan's writer or queued for its worker, with the same backpressure. Returns false, having
   * done nothing, when the plan no longer holds, a forwarder on its way has messages waiting, or
   * the payload does not fit (then route() it).
   */
  runPlan(plan: RoutePlan, buf: Uint8Array, start: number, end: number): boolean {
    if (!this.#planReady(plan)) return false
    const writer = plan.writer
    if (writer === undefined) {
      this.stats.delivered += plan.forwarders.length
      this.#enqueue(plan.target, { onward: plan.onward, return: plan.return, payload: byteView(buf, start, end), local: plan.local })
      return true
    }
    if (end - start > writer.maxPayload) return false
    this.#planWritten(plan, writer.write(buf, start, end))
    return true
  }

  /**
   * As {@link runPlan}, for a frame whose payload is `pieces[0][start…]` followed by the other
   * pieces (`length` bytes in all), written on without being gathered. Only plans that end at a
   * sink whose writer takes pieces; returns false, having done nothing, otherwise.
   */
  runPlanPieces(plan: RoutePlan, pieces: readonly Uint8Array[], start: number, length: number): boolean {
    const writer = plan.writer
    if (writer?.writePieces === undefined || length > writer.maxPayload || !this.#planReady(plan)) return false
    this.#planWritten(plan, writer.writePieces(pieces, start, length))
    return true
  }

  /** The plan holds, and no forwarder on its way has messages waiting (or is busy): this one would overtake them. */
  #planReady(plan: RoutePlan): boolean {
    if (!this.planHolds(plan)) return false
    const fws = plan.forwarders
    for (let i = 0; i < fws.length; i++) if (fws[i]!.running || fws[i]!.head < fws[i]!.queue.length) return false
    return true
  }

  /** Counts a message written by a plan's writer, as route() counts it, and pauses its producer when the sink is full. */
  #planWritten(plan: RoutePlan, ok: boolean): void {
    this.stats.delivered += plan.forwarders.length + 1
    const producer = plan.local.producer
    const target = plan.target
    if (!ok && producer !== undefined && !target.waiting.has(producer)) {
      target.waiting.add(producer)
      producer.pause()
    }
  }

  /** Does `plan` still give what route() would? (See {@link planRoute}.) */
  planHolds(plan: RoutePlan): boolean {
    if (this.#state !== 'running' || plan.target.stopped) return false
    const flows = plan.flows
    for (let i = 0; i < flows.length; i++) if (flows[i]!.version !== plan.versions[i]) return false
    const fws = plan.forwarders
    for (let i = 0; i < fws.length; i++) if (fws[i]!.stopped || fws[i]!.forwarder!.route !== plan.routes[i]) return false
    return true
  }

  #enqueue(entry: WorkerEntry, msg: Message): void {
    if (entry.isSink) {
      this.stats.delivered++
      let ok: boolean
      try {
        ok = (entry.worker as SinkWorker).handleMessage(entry.ctx, msg)
      } catch (err) {
        this.#workerError(entry, err, msg)
        return
      }
      if (!ok) this.#pressure(entry, msg)
      return
    }
    if (!entry.running && entry.queued === 0 && this.#depth < MAX_INLINE_DEPTH) {
      this.#run(entry, msg)
      return
    }
    entry.queue.push(msg)
    if (entry.queued >= entry.capacity) this.#pressure(entry, msg)
    this.#schedule(entry)
  }

  #pressure(entry: WorkerEntry, msg: Message): void {
    const p = msg.local.producer
    if (p !== undefined && !entry.waiting.has(p)) {
      entry.waiting.add(p)
      p.pause()
    }
  }

  #release(entry: WorkerEntry): void {
    if (entry.waiting.size === 0) return
    const list = [...entry.waiting]
    entry.waiting.clear()
    for (const p of list) p.resume()
  }

  #schedule(entry: WorkerEntry): void {
    if (entry.scheduled || entry.running) return
    entry.scheduled = true
    setImmediate(() => {
      entry.scheduled = false
      this.#drain(entry)
    })
  }

  #drain(entry: WorkerEntry): void {
    while (!entry.running && entry.queued > 0 && !entry.stopped) {
      const msg = entry.queue[entry.head]!
      entry.queue[entry.head++] = undefined as unknown as Message
      if (entry.head > 1024 && entry.head * 2 > entry.queue.length) {
        entry.queue.splice(0, entry.head)
        entry.head = 0
      }
      this.#run(entry, msg)
    }
    if (entry.queued === 0) {
      entry.queue.length = 0
      entry.head = 0
    }
    if (entry.queued <= entry.capacity >> 1) this.#release(entry)
    if (!entry.running && entry.queued === 0 && entry.idleWaiters.length > 0) {
      const w = entry.idleWaiters
      entry.idleWaiters = []
      for (const f of w) f()
    }
  }

  #run(entry: WorkerEntry, msg: Message): void {
    this.stats.delivered++
    let r: unknown
    this.#depth++
    try {
      r = (entry.worker as Worker).handleMessage(entry.ctx, msg)
    } catch (err) {
      this.#workerError(entry, err, msg)
      return
    } finally {
      this.#depth--
    }
    if (isThenable(r)) {
      entry.running = true
      r.then(
        () => this.#settled(entry),
        (err: unknown) => {
          this.#workerError(entry, err, msg)
          this.#settled(entry)
        },
      )
    }
  }

  #settled(entry: WorkerEntry): void {
    entry.running = false
    if (entry.queued > 0) this.#schedule(entry)
    else this.#drain(entry)
  }

  #workerError(entry: WorkerEntry, err: unknown, msg: Message): void {
    this.stats.workerErrors++
    const e = err instanceof ThroughlineError ? err : undefined
    this.drop('worker-error', e, msg, entry.addresses[0]!.text)
    this.logger.warn('worker failed on a message', { worker: entry.addresses[0]!.text, error: err })
  }

  /**
   * Counts, logs and emits a dropped message. Transports and services call this too, so that
   * every drop in the node is visible in one place.
   */
  drop(reason: DropReason, error: ThroughlineError | undefined, message: Message | undefined, at: string | undefined): void {
    this.stats.drops[reason] = (this.stats.drops[reason] ?? 0) + 1
    this.logger.warn('dropped', {
      reason,
      at,
      code: error?.code,
      error: error?.message,
      onward: message === undefined ? undefined : routeToString(message.onward),
    })
    if (this.listenerCount('drop') > 0) this.emit('drop', { reason, error, message, at } satisfies DropEvent)
  }

  /** Total number of drops, all reasons. */
  dropCount(reason?: string): number {
    if (reason !== undefined) return this.stats.drops[reason] ?? 0
    let n = 0
    for (const v of Object.values(this.stats.drops)) n += v
    return n
  }

  // ------------------------------------------------------------------ request / response

  /**
   * Sends `payload` along `onward` from a fresh reply address and resolves with the first
   * message that comes back. Rejects with ERR_TIMEOUT, ERR_ABORTED, ERR_STOPPED, or at once with
   * the error of a local drop of the request (e.g. ERR_CONNECTION_REFUSED for an unreachable
   * first hop).
   */
  request(onward: Route, payload: Uint8Array, options: { timeout?: number; signal?: AbortSignal; local?: LocalInfo } = {}): Promise<Message> {
    this.#assertRunning()
    const timeoutMs = options.timeout ?? DEFAULT_REQUEST_TIMEOUT_MS
    const signal = options.signal
    if (signal?.aborted) return Promise.reject(tlError('ERR_ABORTED', 'request aborted before it was sent', { cause: signal.reason }))
    return new Promise<Message>((resolve, reject) => {
      const replyAddr = randomLocal()
      let done = false
      const finish = (err: Error | undefined, msg?: Message): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        this.off('drop', onDrop)
        this.#pendingRequests.delete(fail)
        void this.stopWorker(replyAddr)
        if (err !== undefined) reject(err)
        else resolve(msg!)
      }
      const fail = (err: Error): void => finish(err)
      const onAbort = (): void => finish(tlError('ERR_ABORTED', 'request aborted', { cause: signal?.reason }))
      const onDrop = (ev: DropEvent): void => {
        const m = ev.message
        if (m !== undefined && m.return[0] === replyAddr && ev.error !== undefined) finish(ev.error)
      }
      const timer = setTimeout(
        () => finish(tlError('ERR_TIMEOUT', `no reply from ${routeToString(onward)} within ${timeoutMs} ms`)),
        timeoutMs,
      )
      signal?.addEventListener('abort', onAbort, { once: true })
      this.on('drop', onDrop)
      this.#pendingRequests.add(fail)
      this.startWorker(replyAddr, { handleMessage: (_ctx, msg) => finish(undefined, msg) }, { acceptsNetwork: true })
      this.route({ onward, return: [replyAddr], payload, local: options.local ?? EMPTY_LOCAL })
    })
  }

  // ------------------------------------------------------------------ shutdown

  /**
   * Ordered shutdown: application workers, then services, then channels (so they can still
   * send Close), then transport connections, then the transports themselves.
   */
  async stop(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'stopping') return
    if (this.#state === 'new') {
      this.#state = 'stopped'
      return
    }
    for (const fail of [...this.#pendingRequests]) fail(tlError('ERR_STOPPED', `node ${this.name} stopped`))
    for (const layer of LAYERS) {
      const entries = new Set<WorkerEntry>()
      for (const e of this.#workers.values()) if ((e.options.layer ?? 'app') === layer) entries.add(e)
      await Promise.all([...entries].map((e) => this.#stopEntry(e)))
    }
    this.#state = 'stopping'
    await Promise.all([...this.#transports.values()].map((t) => t.stop()))
    this.#state = 'stopped'
  }
}
