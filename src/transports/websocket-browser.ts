/**
 * The WebSocket transport for browsers: a dial-only transport on the native `WebSocket`
 * (`binaryType = 'arraybuffer'`), with the same wire and Link contract as the Node transport in
 * `websocket.ts`: one binary message per frame, an empty binary message as heartbeat.
 * Addresses `2#HOST:PORT` (ws://) and `2#wss:HOST:PORT` (wss://). TLS is the browser's.
 *
 * This file imports no `node:` module and uses no Node global (no Buffer, process or
 * setImmediate), so that it bundles for a browser. The modules it builds on do use some; see
 * the notes in the report of this transport (router/address.ts: node:crypto; router/codec.ts and
 * router/address.ts: the Buffer global; transports/connection.ts: process.nextTick; and the Node
 * itself, router/node.ts: node:events and setImmediate, router/logger.ts: node:util).
 *
 * What a browser WebSocket cannot do, and what this link does instead:
 * - no fragmented send: head and payload are copied into one buffer per frame;
 * - no 'drain' event: `writeFrame` returns false once `bufferedAmount` is over the high-water
 *   mark, and `bufferedAmount` is polled until it falls under half of it, then `onDrain`;
 * - no read pause: frames received while paused are queued here (bounded by
 *   `maxPausedBytes`; over it the connection is closed) and delivered on resume;
 * - no size limit before allocation: a message over the frame limit is refused after it arrived;
 * - close codes 1000 and 3000-4999 only: an error close uses 3000 + the RFC 6455 code it stands
 *   for (4009 too big, 4003 text message, 4002 protocol error, ...), with the error code as reason.
 *
 * @module
 */
import { tlError, type ThroughlineError } from '../errors.ts'
import { ADDRESS_TYPE } from '../router/constants.ts'
import type { Node } from '../router/node.ts'
import { checkHostPort } from '../router/route.ts'
import { BaseTransport } from './base.ts'
import type { Link, TransportOptions } from './types.ts'
import { WS_CLOSE, wsCloseCodeFor } from './ws-close.ts'

/** A message event of the WebSocket API. */
export interface BrowserMessageEvent {
  readonly data: unknown
}

/** A close event of the WebSocket API. */
export interface BrowserCloseEvent {
  readonly code: number
  readonly reason: string
  readonly wasClean?: boolean
}

/**
 * The part of the WebSocket API (browsers, or `ws` on Node) this transport uses. The handler
 * slots take `never` so that both the DOM `WebSocket` and `ws`'s class (whose event types
 * differ) fit without a cast; the link installs handlers for the events typed above.
 */
export interface BrowserWebSocket {
  binaryType: string
  readonly bufferedAmount: number
  readonly readyState: number
  onopen: ((ev: never) => void) | null
  onmessage: ((ev: never) => void) | null
  onerror: ((ev: never) => void) | null
  onclose: ((ev: never) => void) | null
  send(data: ArrayBuffer | ArrayBufferView): void
  close(code?: number, reason?: string): void
}

/** `new WebSocket(url)`. */
export type BrowserWebSocketConstructor = new (url: string) => BrowserWebSocket

export interface BrowserWebSocketTransportOptions extends TransportOptions {
  /** The WebSocket class (default: `globalThis.WebSocket`). */
  WebSocket?: BrowserWebSocketConstructor
  /** `bufferedAmount` (bytes) over which `writeFrame` returns false. Default 1 MiB. */
  highWaterMark?: number
  /** Bytes a paused link may queue before it closes the connection. Default 16 MiB. */
  maxPausedBytes?: number
  /** How often `bufferedAmount` is polled while the link waits for drain (ms). Default 5. */
  drainPollInterval?: number
}

const OPEN = 1
const CLOSE_NORMAL = WS_CLOSE.NORMAL
/** Error closes use 3000 + the RFC 6455 code (browsers may send only 1000 and 3000-4999): 4002, 4009... */
const APP_CLOSE_OFFSET = 3000
const EMPTY = new Uint8Array(0)

const WSS_PREFIX = 'wss:'


function closeError(ev: BrowserCloseEvent, remote: string): ThroughlineError | undefined {
  const { code, reason } = ev
  if (code === 1000 || code === 1001 || code === 1005) return undefined
  const why = code === 1006 ? 'the connection was lost without a close frame (1006)' : `the peer closed with code ${code}${reason === '' ? '' : ` (${reason})`}`
  return tlError('ERR_CONNECTION_CLOSED', `ws ${remote}: ${why}`, { details: { wsCode: code, reason } })
}

function isArrayBuffer(d: unknown): d is ArrayBuffer {
  return d instanceof ArrayBuffer || Object.prototype.toString.call(d) === '[object ArrayBuffer]'
}

interface LinkSettings {
  maxFrameSize: number
  highWaterMark: number
  maxPausedBytes: number
  drainPollInterval: number
}

/** A native (browser) WebSocket, open, as a frame link. */
export class BrowserWebSocketLink implements Link {
  readonly remote: string
  readonly ws: BrowserWebSocket
  readonly #s: LinkSettings
  #closed = false
  #paused = false
  #queue: Uint8Array[] = []
  #queuedBytes = 0
  #flushScheduled = false
  #drainTimer: ReturnType<typeof setTimeout> | undefined
  onFrame: (frame: Uint8Array) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}
  readonly #flush = (): void => {
    this.#flushScheduled = false
    while (!this.#paused && !this.#closed && this.#queue.length > 0) {
      const f = this.#queue.shift()!
      this.#queuedBytes -= f.length
      this.onFrame(f)
    }
  }
  readonly #pollDrain = (): void => {
    this.#drainTimer = undefined
    if (this.#closed) return
    if (this.ws.bufferedAmount <= this.#s.highWaterMark / 2) this.onDrain()
    else this.#drainTimer = setTimeout(this.#pollDrain, this.#s.drainPollInterval)
  }

  constructor(ws: BrowserWebSocket, remote: string, settings: LinkSettings) {
    this.ws = ws
    this.remote = remote
    this.#s = settings
    ws.binaryType = 'arraybuffer'
    ws.onmessage = (ev: BrowserMessageEvent) => this.#onMessage(ev.data)
    ws.onerror = () => {} // a close event follows; browsers say nothing more
    ws.onclose = (ev: BrowserCloseEvent) => {
      if (this.#closed) return
      this.#closed = true
      this.#stopPolling()
      this.onClose(closeError(ev, remote))
    }
  }

  #onMessage(data: unknown): void {
    if (this.#closed) return
    if (typeof data === 'string') {
      this.#closeWith(tlError('ERR_WS_PROTOCOL', `ws ${this.remote}: sent a text message; frames are binary messages`), 1003)
      return
    }
    if (!isArrayBuffer(data)) {
      this.close(tlError('ERR_WS_PROTOCOL', `ws ${this.remote}: a message is not an ArrayBuffer (binaryType changed?)`))
      return
    }
    if (data.byteLength > this.#s.maxFrameSize) {
      this.close(tlError('ERR_FRAME_TOO_LARGE', `ws ${this.remote}: a message of ${data.byteLength} bytes is over the ${this.#s.maxFrameSize}-byte frame limit`))
      return
    }
    const frame = new Uint8Array(data)
    if (!this.#paused && this.#queue.length === 0) {
      this.onFrame(frame)
      return
    }
    this.#queue.push(frame)
    this.#queuedBytes += frame.length
    if (this.#queuedBytes > this.#s.maxPausedBytes) {
      this.close(tlError('ERR_CONNECTION_CLOSED', `ws ${this.remote}: more than ${this.#s.maxPausedBytes} bytes arrived while the receiver was paused`))
    }
  }

  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    if (this.#closed || this.ws.readyState !== OPEN) return true
    if (payload.length === 0) {
      this.ws.send(head)
    } else {
      // the WebSocket API sends one buffer per message: head and payload are copied together
      const frame = new Uint8Array(head.length + payload.length)
      frame.set(head, 0)
      frame.set(payload, head.length)
      this.ws.send(frame)
    }
    if (this.ws.bufferedAmount >= this.#s.highWaterMark) {
      if (this.#drainTimer === undefined) this.#drainTimer = setTimeout(this.#pollDrain, this.#s.drainPollInterval)
      return false
    }
    return true
  }

  writeHeartbeat(): void {
    if (!this.#closed && this.ws.readyState === OPEN) this.ws.send(EMPTY)
  }

  pause(): void {
    this.#paused = true
  }

  resume(): void {
    this.#paused = false
    if (this.#queue.length > 0 && !this.#flushScheduled) {
      this.#flushScheduled = true
      queueMicrotask(this.#flush)
    }
  }

  #stopPolling(): void {
    if (this.#drainTimer !== undefined) clearTimeout(this.#drainTimer)
    this.#drainTimer = undefined
  }

  close(error?: ThroughlineError): void {
    this.#closeWith(error, error === undefined ? CLOSE_NORMAL : wsCloseCodeFor(error))
  }

  #closeWith(error: ThroughlineError | undefined, rfcCode: number): void {
    if (this.#closed) return
    this.#closed = true
    this.#stopPolling()
    this.#queue = []
    this.#queuedBytes = 0
    try {
      if (error === undefined) this.ws.close(CLOSE_NORMAL)
      else this.ws.close(APP_CLOSE_OFFSET + rfcCode, error.code)
    } catch {
      this.ws.close()
    }
    // report at once; the close event is ignored after this
    this.onClose(error)
    this.onClose = () => {}
  }
}

/**
 * The browser WebSocket transport (dial only): `node.addTransport(new BrowserWebSocketTransport(node))`,
 * then routes through `/ws/HOST:PORT` or `/wss/HOST:PORT`.
 */
export class BrowserWebSocketTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.WS
  readonly name = 'ws'
  readonly #WebSocket: BrowserWebSocketConstructor
  readonly #settings: LinkSettings

  constructor(node: Node, options: BrowserWebSocketTransportOptions = {}) {
    super(node, options, 'ws')
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: BrowserWebSocketConstructor }).WebSocket
    if (ctor === undefined) throw tlError('ERR_INVALID_ARGUMENT', 'no WebSocket class: pass options.WebSocket outside a browser')
    this.#WebSocket = ctor
    this.#settings = {
      maxFrameSize: this.options.maxFrameSize,
      highWaterMark: options.highWaterMark ?? 1024 * 1024,
      maxPausedBytes: options.maxPausedBytes ?? 16 * 1024 * 1024,
      drainPollInterval: options.drainPollInterval ?? 5,
    }
  }

  protected checkPeer(peer: string): string {
    checkHostPort(peer.startsWith(WSS_PREFIX) ? peer.slice(WSS_PREFIX.length) : peer)
    return peer
  }

  protected dialLink(peer: string, signal: AbortSignal): Promise<Link> {
    const secure = peer.startsWith(WSS_PREFIX)
    const hostPort = secure ? peer.slice(WSS_PREFIX.length) : peer
    const url = `${secure ? 'wss' : 'ws'}://${hostPort}/`
    return new Promise<Link>((resolve, reject) => {
      let ws: BrowserWebSocket
      try {
        ws = new this.#WebSocket(url)
      } catch (err) {
        reject(tlError('ERR_CONNECTION_REFUSED', `cannot connect to ${url}: ${(err as Error).message}`, { cause: err }))
        return
      }
      ws.binaryType = 'arraybuffer'
      let message = ''
      const done = (): void => {
        signal.removeEventListener('abort', onAbort)
        ws.onopen = ws.onclose = null
        ws.onerror = () => {}
      }
      const onAbort = (): void => {
        done()
        ws.close()
        reject(tlError('ERR_ABORTED', `dial to ws ${peer} aborted`))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      ws.onopen = () => {
        done()
        resolve(new BrowserWebSocketLink(ws, hostPort, this.#settings))
      }
      // browsers give no reason for a failed connection; a WebSocket-compatible shim may
      ws.onerror = (ev: { message?: unknown } | null) => {
        const m = ev?.message
        if (typeof m === 'string') message = m
      }
      ws.onclose = (ev: BrowserCloseEvent) => {
        done()
        reject(tlError('ERR_CONNECTION_REFUSED', `cannot connect to ${url}: ${message !== '' ? message : `closed with code ${ev.code}`}`, { details: { wsCode: ev.code } }))
      }
    })
  }
}
