/**
 * A router connection over a {@link Link}: a sink worker at a random local address.
 *
 * - Outbound: a message routed to the connection (by its local address, or by the transport
 *   peer address) loses its first hop and is written as one frame; the head is encoded once and
 *   the payload is written as it is (never copied).
 * - Inbound: each frame is decoded; the connection's local address is pushed onto the return
 *   route, and the message carries the connection's flow control (deny by default) and the
 *   connection itself as producer for backpressure.
 * - One bad frame closes this connection only, with a typed, logged error.
 * - Heartbeats when idle on the send side; ERR_IDLE_TIMEOUT when nothing arrives.
 *
 * @module
 */
import { tlError, type ThroughlineError, isThroughlineError } from '../errors.ts'
import type { FlowControl } from '../router/access.ts'
import { type Address, randomLocal } from '../router/address.ts'
import { type CodecLimits, type DecodeCache, type EncodeCache, cachedPayloadOffset, createDecodeCache, createEncodeCache, decodeEnvelope, encodeHeadFrom, byteView } from '../router/codec.ts'
import type { Logger } from '../router/logger.ts'
import type { LocalInfo, Message, Producer } from '../router/message.ts'
import type { Node, RoutePlan, SinkWorker, TransitWriter, WorkerContext } from '../router/node.ts'
import type { Link } from './types.ts'

/** Frames with an unplannable header before planning is tried again (the first time). */
const MIN_PLAN_RETRY_FRAMES = 16
/** The longest wait, in frames, before trying again to plan a header that could not be planned. */
const MAX_PLAN_RETRY_FRAMES = 4096

export interface ConnectionOptions {
  transport: string
  /** Peer key in the registry (`host:port`), for logs and events. */
  peer: string
  /** Did this node dial (true) or accept (false)? */
  dialled: boolean
  flow: FlowControl
  heartbeatInterval: number
  idleTimeout: number
  maxFrameSize: number
  logger: Logger
}

/** Details of a `connection-open` / `connection-closed` node event. */
export interface ConnectionEvent {
  address: Address
  transport: string
  peer: string
  dialled: boolean
  error?: ThroughlineError | undefined
}

export class Connection implements Producer, SinkWorker {
  readonly sink = true as const
  readonly address: Address
  readonly link: Link
  readonly node: Node
  readonly options: ConnectionOptions
  #ctx: WorkerContext | undefined
  #limits: CodecLimits
  /** The last header decoded on this connection (frames of one stream mostly repeat it). */
  #decodeCache: DecodeCache = createDecodeCache()
  /** The last head encoded on this connection (messages on it mostly carry the same routes). */
  #encodeCache: EncodeCache = createEncodeCache()
  /**
   * The route plan for the header in the decode cache (made when that header came a second time
   * in a row), and the cache generation it belongs to: frames repeating that header skip decoding
   * and routing and go straight where the plan says (Node.planRoute).
   */
  #plan: RoutePlan | undefined
  #planGeneration = -1
  /**
   * When a header could not be planned (its way cannot be, or it was refused then), planning is
   * tried again after this many more frames with it, doubling up to {@link MAX_PLAN_RETRY_FRAMES}.
   */
  #planRetry = 0
  #planRetryAt = 0
  /** The node-local metadata of every inbound message: the same for all of them, so shared (frozen). */
  #inboundLocal: LocalInfo
  #paused = 0
  #closed = false
  #lastSent = 0
  #lastReceived = 0
  /**
   * The node's clock read once per event-loop turn: every frame of one read arrived at the same
   * time, and every frame written in one turn leaves in the same corked write, so one reading
   * serves them all (a clock read costs about as much as the rest of a relay hop's bookkeeping).
   */
  #turnNow = 0
  #turnNowValid = false
  readonly #endTurn = (): void => {
    this.#turnNowValid = false
  }
  #timer: NodeJS.Timeout | undefined
  #tickMs = Infinity
  #closeListeners: ((err?: ThroughlineError) => void)[] = []
  /** Frames and bytes seen, and the frames in that took the fast path (a route plan), for diagnostics. */
  readonly counters = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, planned: 0 }

  constructor(node: Node, link: Link, options: ConnectionOptions) {
    this.node = node
    this.link = link
    this.options = options
    this.address = randomLocal()
    this.#limits = { maxHeaderSize: node.limits.maxHeaderSize, maxRouteLength: node.limits.maxRouteLength }
    this.#lastSent = this.#lastReceived = node.now()
    this.#inboundLocal = Object.freeze({ flow: options.flow, producer: this as Producer, connection: this.address })
    link.onFrame = (buf, start, end) => this.#onFrame(buf, start ?? 0, end ?? buf.length)
    link.onFramePieces = (pieces, length) => this.#onFramePieces(pieces, length)
    link.onClose = (e) => this.#onLinkClose(e)
    link.onDrain = () => this.#ctx?.drained()
  }

  get flow(): FlowControl {
    return this.options.flow
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Registers the connection as a worker and starts its timers. */
  open(): this {
    this.#ctx = this.node.startWorker(this.address, this, { layer: 'transport' })
    const { heartbeatInterval, idleTimeout } = this.options
    const tick = Math.min(heartbeatInterval || Infinity, idleTimeout || Infinity)
    if (Number.isFinite(tick)) {
      this.#tickMs = Math.max(10, Math.floor(tick / 2))
      this.#timer = setInterval(() => this.#onTick(), this.#tickMs)
      this.#timer.unref()
    }
    this.node.emit('connection-open', this.#event())
    return this
  }

  #event(error?: ThroughlineError): ConnectionEvent {
    return { address: this.address, transport: this.options.transport, peer: this.options.peer, dialled: this.options.dialled, error }
  }

  /** Calls `f` once when the connection closes. */
  onClose(f: (err?: ThroughlineError) => void): void {
    if (this.#closed) f()
    else this.#closeListeners.push(f)
  }

  #onTick(): void {
    const now = this.node.now()
    const { heartbeatInterval, idleTimeout } = this.options
    if (idleTimeout > 0 && now - this.#lastReceived >= idleTimeout) {
      this.close(tlError('ERR_IDLE_TIMEOUT', `nothing received from ${this.link.remote} for ${idleTimeout} ms`))
      return
    }
    if (heartbeatInterval > 0 && now - this.#lastSent >= heartbeatInterval) {
      this.#lastSent = now
      this.link.writeHeartbeat()
    } else if (now - this.#lastSent >= this.#tickMs) {
      this.link.trim?.() // nothing sent for a tick: no need to keep write buffers
    }
  }

  #now(): number {
    if (!this.#turnNowValid) {
      this.#turnNow = this.node.now()
      this.#turnNowValid = true
      process.nextTick(this.#endTurn)
    }
    return this.#turnNow
  }

  // ---------------------------------------------------------------- outbound (SinkWorker)

  /** Writes `msg` (its first hop is this connection) as one frame. */
  handleMessage(_ctx: WorkerContext, msg: Message): boolean {
    return this.send(msg)
  }

  /** A writer of frames with these routes (this connection's own address first in `onward`), for route plans. */
  transitWriter(onward: readonly Address[], ret: readonly Address[]): TransitWriter | undefined {
    if (this.#closed) return undefined
    const head = encodeHeadFrom(onward, 1, ret)
    const maxPayload = this.options.maxFrameSize - head.length
    if (maxPayload < 0) return undefined
    const link = this.link
    const writer: TransitWriter = { maxPayload, write: (buf, start, end) => this.#writeRange(head, buf, start, end) }
    if (link.writeFramePieces !== undefined) {
      writer.writePieces = (pieces, start, length) => {
        this.#count(head.length + length)
        return link.writeFramePieces!(head, pieces, start, length)
      }
    }
    return writer
  }

  #write(head: Buffer, payload: Uint8Array): boolean {
    this.#count(head.length + payload.length)
    return this.link.writeFrame(head, payload)
  }

  #writeRange(head: Buffer, buf: Uint8Array, start: number, end: number): boolean {
    this.#count(head.length + end - start)
    const link = this.link
    return link.writeFrameRange !== undefined ? link.writeFrameRange(head, buf, start, end) : link.writeFrame(head, byteView(buf, start, end))
  }

  #count(size: number): void {
    this.counters.framesOut++
    this.counters.bytesOut += size
    this.#lastSent = this.#now()
  }

  /** Writes `msg` after popping its first hop. Returns false when the link is full. */
  send(msg: Message): boolean {
    if (this.#closed) {
      this.node.drop('connection-closed', tlError('ERR_CONNECTION_CLOSED', `connection to ${this.link.remote} is closed`), msg, this.address.text)
      return true
    }
    const head = encodeHeadFrom(msg.onward, 1, msg.return, 0, this.#encodeCache)
    const size = head.length + msg.payload.length
    if (size > this.options.maxFrameSize) {
      this.node.drop('frame-too-large', tlError('ERR_FRAME_TOO_LARGE', `message of ${size} bytes is over the ${this.options.maxFrameSize}-byte frame limit`), msg, this.address.text)
      return true
    }
    return this.#write(head, msg.payload)
  }

  // ---------------------------------------------------------------- inbound

  /**
   * A frame that arrived in pieces: taken as it is when its header (all in the first piece) is the
   * planned one and the plan writes to a connection (a relay hop of a large message: no gathering
   * copy); otherwise false, and the link gathers it for {@link #onFrame}.
   */
  #onFramePieces(pieces: readonly Uint8Array[], length: number): boolean {
    const plan = this.#plan
    if (this.#closed || plan === undefined || plan.writer === undefined || this.#planGeneration !== this.#decodeCache.generation) return false
    const first = pieces[0]!
    const at = cachedPayloadOffset(first, 0, first.length, this.#limits, this.#decodeCache)
    if (at < 0 || !this.node.runPlanPieces(plan, pieces, at, length - at)) return false
    this.#lastReceived = this.#now()
    this.counters.framesIn++
    this.counters.bytesIn += length
    this.counters.planned++
    return true
  }

  /** One received frame: `buf[start, end)`. */
  #onFrame(buf: Uint8Array, start: number, end: number): void {
    if (this.#closed) return
    this.#lastReceived = this.#now()
    if (end === start) return // heartbeat
    this.counters.framesIn++
    this.counters.bytesIn += end - start
    const cache = this.#decodeCache
    if (this.#plan !== undefined && this.#planGeneration === cache.generation) {
      // fast path: the header of the plan again, and the plan still holds
      const at = cachedPayloadOffset(buf, start, end, this.#limits, cache)
      if (at >= 0) {
        if (this.node.runPlan(this.#plan, buf, at, end)) {
          this.counters.planned++
          return
        }
        // a plan that no longer holds is made again after this frame's route()
        if (!this.node.planHolds(this.#plan)) this.#planGeneration = -1
      }
    }
    const frame = start === 0 && end === buf.length ? buf : byteView(buf, start, end)
    let env
    try {
      env = decodeEnvelope(frame, this.#limits, this.#decodeCache)
    } catch (err) {
      const e = isThroughlineError(err) ? err : tlError('ERR_MALFORMED_ENVELOPE', String(err), { cause: err })
      this.node.drop('decode-error', e, undefined, this.address.text)
      this.close(e)
      return
    }
    const r = env.return
    const ret = new Array<Address>(r.length + 1)
    ret[0] = this.address
    for (let i = 0; i < r.length; i++) ret[i + 1] = r[i]!
    this.node.route({ onward: env.onward, return: ret, payload: env.payload, local: this.#inboundLocal })
    // a header that came twice in a row: plan its route for the next frames (once per header, or
    // again after a while if it could not be planned: what refused it may change)
    if (cache.lastHit && !this.#closed && (this.#planGeneration !== cache.generation || (this.#plan === undefined && this.counters.framesIn >= this.#planRetryAt))) {
      if (this.#planGeneration !== cache.generation) this.#planRetry = 0
      this.#planGeneration = cache.generation
      this.#plan = this.node.planRoute(env.onward, ret, this.#inboundLocal)
      if (this.#plan === undefined) {
        this.#planRetry = Math.min(Math.max(MIN_PLAN_RETRY_FRAMES, this.#planRetry * 2), MAX_PLAN_RETRY_FRAMES)
        this.#planRetryAt = this.counters.framesIn + this.#planRetry
      }
    }
  }

  // ---------------------------------------------------------------- producer (backpressure)

  pause(): void {
    if (this.#paused++ === 0) this.link.pause()
  }

  resume(): void {
    if (this.#paused === 0) return
    if (--this.#paused === 0) this.link.resume()
  }

  // ---------------------------------------------------------------- close

  /** Node shutdown: the connection is closed. */
  onStop(): void {
    this.close()
  }

  /** Closes the connection; a typed error says why (it is logged). */
  close(error?: ThroughlineError): void {
    if (this.#closed) return
    this.link.close(error)
    this.#onLinkClose(error)
  }

  #onLinkClose(error?: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    if (error !== undefined) {
      this.options.logger.warn('connection closed with an error', { peer: this.link.remote, code: error.code, error: error.message })
    } else {
      this.options.logger.debug('connection closed', { peer: this.link.remote })
    }
    void this.node.stopWorker(this.address)
    this.node.emit('connection-closed', this.#event(error))
    const ls = this.#closeListeners
    this.#closeListeners = []
    for (const f of ls) f(error)
  }
}
