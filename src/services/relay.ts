/**
 * The relay service (server side) and the relay registration (client side).
 *
 * A node behind NAT registers a NAME at a relay node's `relay` service; the relay node starts a
 * forwarder at `forward_to_NAME` whose route is the registration's return route. A message sent
 * to `…/service/forward_to_NAME/REST` is forwarded along that route with `REST` after it.
 *
 * Registration rules (documented in docs/relay.md):
 * - Names are 1–64 characters of `[A-Za-z0-9_.-]`.
 * - A registration is a lease (default 60 s) renewed by the client; it ends when the lease
 *   expires or when the connection it came through closes, whichever is first.
 * - The first registration of a name gets a random token. A later registration of the same name
 *   that presents that token replaces the route (re-registration after a reconnect, renewal).
 *   One without the token is refused with ERR_RELAY_NAME_TAKEN while the name is held.
 * - An optional `authorize(name, msg)` hook may refuse a registration (e.g. by peer identity).
 *
 * Wire (msgpack): request `{ op: 'register', name, token? }` → reply
 * `{ ok: true, name, address, token, lease }` or `{ ok: false, code, message }`.
 *
 * @module
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { pack, unpack } from 'msgpackr'
import { type ErrorCode, tlError, type ThroughlineError, isThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { type Address, local, randomLocal } from '../router/address.ts'
import type { Message } from '../router/message.ts'
import type { Forwarder, Node, WorkerContext } from '../router/node.ts'
import { type Route, routeToString } from '../router/route.ts'
import type { ConnectionEvent } from '../transports/connection.ts'

/** Address of the relay service. */
export const RELAY_ADDRESS = 'relay'
/** Prefix of forwarder addresses. */
export const FORWARDER_PREFIX = 'forward_to_'
/** Default lease of a registration (ms). */
export const DEFAULT_RELAY_LEASE_MS = 60_000
/** Most registrations one relay service holds. */
export const DEFAULT_MAX_RELAY_REGISTRATIONS = 10_000
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

export interface RelayServiceOptions {
  /** Lease length (ms). */
  lease?: number
  /** Most names held at once. */
  maxRegistrations?: number
  /** Refuse a registration by returning false (or throwing a ThroughlineError). */
  authorize?: (name: string, msg: Message) => boolean
}

interface Registration {
  name: string
  token: Buffer
  expires: number
  /** `forward_to_NAME`; its route is the registration's return route. */
  forwarder: Forwarder
}

function reply(ctx: WorkerContext, msg: Message, body: Record<string, unknown>): void {
  if (msg.return.length > 0) ctx.reply(msg, pack(body))
}

function failure(code: ErrorCode, message: string): Record<string, unknown> {
  return { ok: false, code, message }
}

/** The relay service on a relay node. */
export class RelayService {
  readonly node: Node
  readonly lease: number
  readonly maxRegistrations: number
  #authorize: ((name: string, msg: Message) => boolean) | undefined
  #registrations = new Map<string, Registration>()
  #sweeper: NodeJS.Timeout
  #onClosed: (ev: ConnectionEvent) => void

  constructor(node: Node, options: RelayServiceOptions = {}) {
    this.node = node
    this.lease = options.lease ?? DEFAULT_RELAY_LEASE_MS
    this.maxRegistrations = options.maxRegistrations ?? DEFAULT_MAX_RELAY_REGISTRATIONS
    this.#authorize = options.authorize
    node.startWorker(RELAY_ADDRESS, { handleMessage: (ctx, msg) => this.#handle(ctx, msg), onStop: () => this.#stop() }, { layer: 'service' })
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, Math.floor(this.lease / 4)))
    this.#sweeper.unref()
    this.#onClosed = (ev) => {
      for (const r of [...this.#registrations.values()]) {
        if (r.forwarder.route[0]?.text === ev.address.text) this.#remove(r, 'connection closed')
      }
    }
    node.on('connection-closed', this.#onClosed)
  }

  /** Registered names. */
  names(): string[] {
    return [...this.#registrations.keys()]
  }

  #handle(ctx: WorkerContext, msg: Message): void {
    let req: unknown
    try {
      req = unpack(msg.payload)
    } catch {
      reply(ctx, msg, failure('ERR_BAD_REQUEST', 'relay request is not msgpack'))
      return
    }
    const r = req as { op?: unknown; name?: unknown; token?: unknown } | null
    if (r === null || typeof r !== 'object' || r.op !== 'register') {
      reply(ctx, msg, failure('ERR_BAD_REQUEST', 'relay request must be { op: "register", name, token? }'))
      return
    }
    const name = r.name
    if (typeof name !== 'string' || !NAME_RE.test(name)) {
      reply(ctx, msg, failure('ERR_RELAY_NAME_INVALID', 'relay name must be 1-64 characters of [A-Za-z0-9_.-]'))
      return
    }
    if (msg.return.length === 0) {
      this.node.drop('bad-request', tlError('ERR_BAD_REQUEST', 'relay registration without a return route'), msg, RELAY_ADDRESS)
      return
    }
    try {
      if (this.#authorize !== undefined && !this.#authorize(name, msg)) {
        reply(ctx, msg, failure('ERR_ACCESS_DENIED', `registration of "${name}" not authorized`))
        return
      }
    } catch (err) {
      const e = isThroughlineError(err) ? err : tlError('ERR_ACCESS_DENIED', String(err))
      reply(ctx, msg, failure(e.code, e.message))
      return
    }
    const token = r.token instanceof Uint8Array ? Buffer.from(r.token) : undefined
    const existing = this.#registrations.get(name)
    if (existing !== undefined) {
      const same = token !== undefined && token.length === existing.token.length && timingSafeEqual(token, existing.token)
      if (!same) {
        reply(ctx, msg, failure('ERR_RELAY_NAME_TAKEN', `relay name "${name}" is held by a live registration`))
        return
      }
      existing.forwarder.route = msg.return
      existing.expires = this.node.now() + this.lease
      this.node.logger.info('relay registration renewed', { name, route: routeToString(msg.return) })
      reply(ctx, msg, { ok: true, name, address: FORWARDER_PREFIX + name, token: existing.token, lease: this.lease })
      return
    }
    if (this.#registrations.size >= this.maxRegistrations) {
      reply(ctx, msg, failure('ERR_RELAY_REFUSED', `relay holds ${this.maxRegistrations} names already`))
      return
    }
    const reg: Registration = {
      name,
      token: token ?? randomBytes(16),
      expires: this.node.now() + this.lease,
      // the forwarder ends the sender's flow: what it emits follows the registered route only
      forwarder: this.node.startForwarder(local(FORWARDER_PREFIX + name), msg.return, { layer: 'service' }),
    }
    this.#registrations.set(name, reg)
    this.node.logger.info('relay registered', { name, route: routeToString(msg.return) })
    reply(ctx, msg, { ok: true, name, address: FORWARDER_PREFIX + name, token: reg.token, lease: this.lease })
  }

  #remove(r: Registration, why: string): void {
    if (this.#registrations.get(r.name) !== r) return
    this.#registrations.delete(r.name)
    void r.forwarder.stop()
    this.node.logger.info('relay registration ended', { name: r.name, why })
  }

  #sweep(): void {
    const now = this.node.now()
    for (const r of [...this.#registrations.values()]) if (r.expires <= now) this.#remove(r, 'lease expired')
  }

  #stop(): void {
    clearInterval(this.#sweeper)
    this.node.off('connection-closed', this.#onClosed)
    for (const r of [...this.#registrations.values()]) this.#remove(r, 'relay stopped')
  }
}

export interface RelayClientOptions {
  /** Route to the relay node (e.g. `[1#relay.example:4000]`); the `relay` service is appended. */
  relayRoute: Route
  name: string
  /** Local addresses that forwarded messages may reach (deny by default). */
  allow: Iterable<string>
  /** May forwarded messages continue over this node's existing connections (a gateway)? Default false. */
  transit?: boolean
  /** Answer timeout of one registration attempt (ms). Default 5 s. */
  timeout?: number
  /** First retry delay after a failure (ms), doubling up to `maxRetryDelay`. */
  retryDelay?: number
  maxRetryDelay?: number
}

/**
 * Keeps a relay registration alive: registers, renews before the lease ends, and registers again
 * whenever the connection to the relay comes back. Emits `registered` ({ name, address }) after
 * each success and `error` (ThroughlineError) after each failed attempt.
 */
export class RelayClient extends EventEmitter {
  readonly node: Node
  readonly name: string
  readonly address: Address
  readonly options: RelayClientOptions
  readonly allow: AllowList
  #token: Uint8Array | undefined
  #pending: { resolve: (m: Message) => void } | undefined
  #timer: NodeJS.Timeout | undefined
  #delay: number
  #stopped = false
  #busy = false
  #relayConnection: string | undefined
  #onOpen: (ev: ConnectionEvent) => void
  #onClosed: (ev: ConnectionEvent) => void

  constructor(node: Node, options: RelayClientOptions) {
    super()
    if (!NAME_RE.test(options.name)) throw tlError('ERR_RELAY_NAME_INVALID', `relay name "${options.name}" must be 1-64 characters of [A-Za-z0-9_.-]`)
    this.node = node
    this.name = options.name
    this.options = options
    this.address = randomLocal()
    this.#delay = options.retryDelay ?? 250
    this.allow = new AllowList(`relay registration ${options.name}`, options.allow, { transit: options.transit ?? false })
    // forwarded messages continue under our own allow-list; what ends here answers a registration
    node.startForwarder(this.address, [], { flow: this.allow, onEnd: (msg) => this.#answer(msg), onStop: () => this.stop(), layer: 'service' })
    const first = options.relayRoute[0]
    this.#onOpen = (ev) => {
      if (first !== undefined && ev.dialled && ev.peer === first.value && first.type !== 0) this.#soon(0)
    }
    this.#onClosed = (ev) => {
      if (ev.address.text === this.#relayConnection) {
        this.#relayConnection = undefined
        this.#soon(this.#delay)
      }
    }
    node.on('connection-open', this.#onOpen)
    node.on('connection-closed', this.#onClosed)
  }

  /** Registers now (and keeps the registration alive). */
  start(): void {
    this.#soon(0)
  }

  #soon(ms: number): void {
    if (this.#stopped) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.#attempt(), ms)
  }

  /** A message addressed to us alone: the answer to our registration; anything else is dropped. */
  #answer(msg: Message): void {
    if (this.#pending !== undefined) this.#pending.resolve(msg)
    else this.node.drop('unexpected', tlError('ERR_BAD_REQUEST', 'unexpected message at relay client'), msg, this.address.text)
  }

  async #attempt(): Promise<void> {
    if (this.#stopped || this.#busy) return
    this.#busy = true
    try {
      const answer = await this.#register()
      this.#delay = this.options.retryDelay ?? 250
      this.#relayConnection = answer.connection
      this.emit('registered', { name: this.name, address: answer.address })
      this.#soon(Math.max(100, Math.floor(answer.lease / 3)))
    } catch (err) {
      const e = isThroughlineError(err) ? err : tlError('ERR_RELAY_REFUSED', String(err))
      if (!this.#stopped) this.emit('error', e)
      this.#soon(this.#delay)
      this.#delay = Math.min(this.#delay * 2, this.options.maxRetryDelay ?? 2_000)
    } finally {
      this.#busy = false
    }
  }

  #register(): Promise<{ address: string; lease: number; connection: string | undefined }> {
    const first = this.options.relayRoute[0]
    const body: Record<string, unknown> = { op: 'register', name: this.name }
    if (this.#token !== undefined) body['token'] = this.#token
    const onward = [...this.options.relayRoute, local(RELAY_ADDRESS)]
    const timeout = this.options.timeout ?? 5_000
    return new Promise((resolve, reject) => {
      let settled = false
      const done = (err?: ThroughlineError, v?: { address: string; lease: number; connection: string | undefined }): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#pending = undefined
        this.node.off('drop', onDrop)
        if (err !== undefined) reject(err)
        else resolve(v!)
      }
      const timer = setTimeout(() => done(tlError('ERR_RELAY_REFUSED', `relay at ${routeToString(this.options.relayRoute)} did not answer within ${timeout} ms`)), timeout)
      const onDrop = (ev: { message?: Message; error?: ThroughlineError }): void => {
        if (ev.message?.return[0] === this.address && ev.error !== undefined) done(ev.error)
      }
      this.node.on('drop', onDrop)
      this.#pending = {
        resolve: (m) => {
          let a: { ok?: unknown; address?: unknown; token?: unknown; lease?: unknown; code?: unknown; message?: unknown }
          try {
            a = unpack(m.payload) as typeof a
          } catch {
            done(tlError('ERR_RELAY_REFUSED', 'relay answered with something that is not msgpack'))
            return
          }
          if (a?.ok === true && typeof a.address === 'string' && a.token instanceof Uint8Array) {
            this.#token = a.token
            done(undefined, { address: a.address, lease: typeof a.lease === 'number' ? a.lease : DEFAULT_RELAY_LEASE_MS, connection: m.local.connection?.text })
          } else {
            const code = typeof a?.code === 'string' && a.code.startsWith('ERR_') ? (a.code as ErrorCode) : 'ERR_RELAY_REFUSED'
            done(tlError(code, `relay refused "${this.name}": ${String(a?.message ?? 'no reason given')}`))
          }
        },
      }
      if (first !== undefined && first.type !== 0) {
        // keep the connection to the relay and let it carry forwarded traffic to us
        const transport = this.node.transport(first.type) as { connect?: (p: string, o: object) => Promise<unknown> } | undefined
        // replies to traffic we forward on come back on this connection: it allows transit as we do
        transport?.connect?.(first.value, { persistent: true, allow: [this.address.text], transit: this.options.transit === true }).catch(() => {})
      }
      this.node.route({ onward, return: [this.address], payload: pack(body), local: {} })
    })
  }

  /** Stops renewing. The relay drops the name when the lease ends or the connection closes. */
  stop(): void {
    if (this.#stopped) return
    this.#stopped = true
    clearTimeout(this.#timer)
    this.node.off('connection-open', this.#onOpen)
    this.node.off('connection-closed', this.#onClosed)
  }
}
