/**
 * The WebSocket transport on Node (npm `ws`). Addresses `2#HOST:PORT` (ws://) and
 * `2#wss:HOST:PORT` (wss://); route text `/ws/HOST:PORT` and `/wss/HOST:PORT`.
 *
 * Wire: one binary WebSocket message per frame (the router envelope, no length prefix); an empty
 * binary message is a heartbeat. `permessage-deflate` is off on both ends (the payloads are
 * ciphertext: deflate costs 35x and saves nothing) and `ws` enforces the frame limit through
 * `maxPayload`, from the frame header, before the message is allocated.
 *
 * Sending: each frame is one binary WebSocket message of a single WebSocket frame, whose header
 * the link writes itself, straight to the socket (ws's own `send` would take a second header
 * buffer and write, and for a client a second copy: see {@link WebSocketLink.writeFrame}). A
 * client masks head and payload in one pass into one buffer (a reused one for frames of 4-68
 * KiB); a server copies a small payload behind its head and header, and writes a larger one (over
 * {@link WS_COALESCE_MAX}) uncopied after them. (A receiver sees the same message as from
 * `ws.send`: how a message is cut into frames carries no meaning in WebSocket, RFC 6455 §5.4.)
 * Writes are batched: the socket is corked on the first write of an event-loop turn and uncorked
 * on the next tick, as on TCP. `writeFrame` returns false once `bufferedAmount` is over a
 * high-water mark (1 MiB); `onDrain` follows the socket's 'drain'.
 *
 * Hostile input closes only that connection, with a typed error: a message over the limit
 * (ERR_FRAME_TOO_LARGE, close code 1009), a text message (ERR_WS_PROTOCOL, 1003), bytes that are
 * not WebSocket frames (ERR_WS_PROTOCOL, 1002), a bad envelope (its decode error, 1002).
 *
 * @module
 */
import { randomFillSync } from 'node:crypto'
import http from 'node:http'
import https from 'node:https'
import { createRequire } from 'node:module'
import type net from 'node:net'
import { WebSocket, WebSocketServer, type ClientOptions, type RawData } from 'ws'
import { tlError, type ErrorCode, type ThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { ADDRESS_TYPE } from '../router/constants.ts'
import type { Node } from '../router/node.ts'
import { checkHostPort, splitHostPort } from '../router/route.ts'
import { BaseTransport, type Listener } from './base.ts'
import type { Link, ListenOptions, TransportOptions } from './types.ts'
import { WS_CLOSE, wsCloseCodeFor } from './ws-close.ts'

/** `bufferedAmount` (bytes) over which `writeFrame` returns false. */
export const WS_HIGH_WATER_MARK = 1024 * 1024
/**
 * Payloads up to this size are copied behind their head (one socket write); larger ones are
 * written uncopied after it (a server's frames; a client masks every byte into a new buffer anyway).
 */
export const WS_COALESCE_MAX = 16 * 1024
/** How long a close handshake may take before the socket is destroyed (ms). */
export const WS_CLOSE_TIMEOUT_MS = 2_000

/** The `wss:` prefix of a secure peer address value (`2#wss:HOST:PORT`). */
export const WSS_PREFIX = 'wss:'

const EMPTY = Buffer.alloc(0)
const SEND_WHOLE = { binary: true, fin: true, compress: false } as const
const SEND_FIRST = { binary: true, fin: false, compress: false } as const

// ---------------------------------------------------------------- frame writing (RFC 6455 §5.2)

/** `mask(source, key, output, offset, length)`: output[offset + i] = source[i] ^ key[i & 3]. */
type MaskFn = (source: Uint8Array, key: Uint8Array, output: Uint8Array, offset: number, length: number) => void

const jsMask: MaskFn = (source, key, output, offset, length) => {
  for (let i = 0; i < length; i++) output[offset + i] = source[i]! ^ key[i & 3]!
}

/** bufferutil's native mask (as ws uses it: from 48 bytes, and not with WS_NO_BUFFER_UTIL), else a loop. */
const mask: MaskFn = (() => {
  if (process.env['WS_NO_BUFFER_UTIL']) return jsMask
  try {
    const native = (createRequire(import.meta.url)('bufferutil') as { mask: MaskFn }).mask
    return (source, key, output, offset, length) => (length < 48 ? jsMask(source, key, output, offset, length) : native(source, key, output, offset, length))
  } catch {
    return jsMask
  }
})()

/** Random masking keys, drawn from a pool refilled by the CSPRNG (as ws does). */
const KEY_POOL_SIZE = 8192
const keyPool = Buffer.alloc(KEY_POOL_SIZE)
let keyAt = KEY_POOL_SIZE

/**
 * A client's masked frames of more than FRAME_POOL_MIN and at most FRAME_POOL_BYTES bytes (a
 * 64 KiB payload, as a Noise message at most, with its head) are built in reusable buffers, each
 * back in the pool once its socket write has completed. A new 64 KiB buffer per frame would cost
 * little to allocate, but V8 counts the bytes as external memory and runs a full GC every 64 MB
 * of it: at wire speed, several times a second. Smaller frames come from Node's own buffer pool.
 */
const FRAME_POOL_BYTES = 68 * 1024
const FRAME_POOL_MIN = 4 * 1024
/** Buffers the pool keeps at most (what goes over is left to the GC). */
const FRAME_POOL_KEEP = 32
const framePool: Buffer[] = []

/** Bytes of a frame header (without a masking key) for a payload of `length` bytes. */
const headerLength = (length: number): number => (length < 126 ? 2 : length < 65536 ? 4 : 10)

/** Writes the header of a final binary frame of `length` payload bytes at `buf[0]`. */
function writeHeader(buf: Buffer, length: number, masked: boolean): void {
  buf[0] = 0x82 // FIN, opcode 2 (binary)
  const m = masked ? 0x80 : 0
  if (length < 126) {
    buf[1] = m | length
  } else if (length < 65536) {
    buf[1] = m | 126
    buf[2] = length >>> 8
    buf[3] = length & 0xff
  } else {
    buf[1] = m | 127
    buf.writeUInt32BE(Math.floor(length / 0x1_0000_0000), 2)
    buf.writeUInt32BE(length >>> 0, 6)
  }
}

/** The parts of ws's internal Sender the direct write path checks (ws 8). */
interface WsSenderState {
  _state?: number
  _bufferedBytes?: number
}

export { WS_CLOSE, wsCloseCodeFor } from './ws-close.ts'

/** The error (if any) a close code received from the peer means. Clean closes have none. */
export function wsCloseError(code: number, reason: string, remote: string): ThroughlineError | undefined {
  if (code === WS_CLOSE.NORMAL || code === WS_CLOSE.GOING_AWAY || code === WS_CLOSE.NO_STATUS) return undefined
  const why = code === WS_CLOSE.ABNORMAL ? 'the connection was lost without a close frame (1006)' : `the peer closed with code ${code}${reason === '' ? '' : ` (${reason})`}`
  return tlError('ERR_CONNECTION_CLOSED', `ws ${remote}: ${why}`, { details: { wsCode: code, reason } })
}

/** A `ws` library error (bad frame, size over `maxPayload`) as a typed error. */
function fromWsError(err: Error & { code?: string }, remote: string): ThroughlineError {
  const code: ErrorCode =
    err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'ERR_FRAME_TOO_LARGE' : err.code?.startsWith('WS_ERR_') === true ? 'ERR_WS_PROTOCOL' : 'ERR_CONNECTION_CLOSED'
  return tlError(code, `ws ${remote}: ${err.message}`, { cause: err, details: { wsError: err.code } })
}

/** A `ws` WebSocket (open) as a frame link. */
export class WebSocketLink implements Link {
  readonly remote: string
  readonly ws: WebSocket
  /** The raw socket under `ws` (net.Socket or tls.TLSSocket): corked per turn, watched for 'drain'. */
  readonly socket: net.Socket
  #corked = false
  #closed = false
  #blocked = false
  #error: ThroughlineError | undefined
  /** A client masks what it sends (RFC 6455 §5.3); a server does not. */
  readonly #masked: boolean
  /** ws's Sender, to check that it holds nothing back before the link writes a frame itself. */
  readonly #sender: WsSenderState | undefined
  /** The masking key of the frame being written, and the same key rotated for the payload. */
  readonly #key = Buffer.alloc(4)
  readonly #rotated = Buffer.alloc(4)
  onFrame: (frame: Uint8Array) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}
  readonly #uncork = (): void => {
    this.#corked = false
    this.socket.uncork()
  }

  constructor(ws: WebSocket, remote: string) {
    this.ws = ws
    this.remote = remote
    const internals = ws as unknown as { _socket: net.Socket; _isServer?: boolean; _sender?: WsSenderState | null }
    this.socket = internals._socket
    this.#masked = internals._isServer !== true
    this.#sender = internals._sender ?? undefined
    ws.binaryType = 'nodebuffer'
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (this.#closed) return
      if (!isBinary) {
        this.#fail(tlError('ERR_WS_PROTOCOL', `ws ${remote}: sent a text message; frames are binary messages`), WS_CLOSE.UNSUPPORTED_DATA)
        return
      }
      this.onFrame(data as Buffer)
    })
    // protocol errors from the receiver (ws has already begun closing with the matching code)
    ws.on('error', (err: Error & { code?: string }) => this.#fail(fromWsError(err, remote)))
    ws.on('close', (code: number, reason: Buffer) => {
      if (this.#closed) return
      this.#closed = true
      this.onClose(this.#error ?? wsCloseError(code, reason.toString(), remote))
    })
    this.socket.on('drain', () => {
      if (this.#blocked && !this.#closed && ws.bufferedAmount < WS_HIGH_WATER_MARK) {
        this.#blocked = false
        this.onDrain()
      }
    })
  }

  #cork(): void {
    if (this.#corked) return
    this.#corked = true
    this.socket.cork()
    process.nextTick(this.#uncork)
  }

  /**
   * Writes one frame as one binary message. While the WebSocket is open and ws's Sender holds
   * nothing back (it never does without permessage-deflate), the link writes the WebSocket frame
   * itself: one header, then head and payload (a client masks both, with one key, into one buffer,
   * reused for frames up to 68 KiB; ws.send would mask into a new buffer per send and add a header
   * buffer and a write).
   * Otherwise it leaves the message to ws.send (after close, that only counts it in bufferedAmount).
   */
  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    if (this.#closed) return true
    this.#cork()
    const sender = this.#sender
    if (this.ws.readyState === WebSocket.OPEN && sender !== undefined && sender._state === 0 && sender._bufferedBytes === 0) {
      if (this.#masked) this.#writeMasked(head, payload)
      else this.#writeUnmasked(head, payload)
    } else {
      this.#send(head, payload)
    }
    if (this.ws.bufferedAmount >= WS_HIGH_WATER_MARK) {
      this.#blocked = true
      return false
    }
    return true
  }

  /** A client's frame: header, masking key, then head and payload masked into the same buffer. */
  #writeMasked(head: Buffer, payload: Uint8Array): void {
    const h = head.length
    const n = payload.length
    const length = h + n
    const at = headerLength(length)
    const size = at + 4 + length
    let pooled: Buffer | undefined
    let frame: Buffer
    if (size > FRAME_POOL_MIN && size <= FRAME_POOL_BYTES) {
      pooled = framePool.pop() ?? Buffer.allocUnsafeSlow(FRAME_POOL_BYTES)
      frame = pooled.subarray(0, size)
    } else {
      frame = Buffer.allocUnsafe(size)
    }
    writeHeader(frame, length, true)
    if (keyAt === KEY_POOL_SIZE) {
      randomFillSync(keyPool)
      keyAt = 0
    }
    const key = this.#key
    for (let i = 0; i < 4; i++) key[i] = frame[at + i] = keyPool[keyAt++]!
    mask(head, key, frame, at + 4, h)
    // the payload goes on at message offset h: the key, rotated by h
    const rotated = this.#rotated
    for (let i = 0; i < 4; i++) rotated[i] = key[(h + i) & 3]!
    mask(payload, rotated, frame, at + 4 + h, n)
    if (pooled === undefined) {
      this.socket.write(frame)
    } else {
      const buf = pooled
      // written (the socket holds it no more): back to the pool; after a failed write, left to the GC
      this.socket.write(frame, (err?: Error | null) => {
        if (err == null && framePool.length < FRAME_POOL_KEEP) framePool.push(buf)
      })
    }
  }

  /** A server's frame: header and head, then the payload (copied behind them when small). */
  #writeUnmasked(head: Buffer, payload: Uint8Array): void {
    const h = head.length
    const n = payload.length
    const length = h + n
    const at = headerLength(length)
    if (n <= WS_COALESCE_MAX) {
      const frame = Buffer.allocUnsafe(at + length)
      writeHeader(frame, length, false)
      head.copy(frame, at)
      frame.set(payload, at + h)
      this.socket.write(frame)
    } else {
      const first = Buffer.allocUnsafe(at + h)
      writeHeader(first, length, false)
      head.copy(first, at)
      this.socket.write(first)
      this.socket.write(payload)
    }
  }

  /** Through ws.send (its Sender queues, or the WebSocket is closing). */
  #send(head: Buffer, payload: Uint8Array): void {
    const n = payload.length
    if (n === 0) {
      this.ws.send(head, SEND_WHOLE)
    } else if (n <= WS_COALESCE_MAX) {
      const frame = Buffer.allocUnsafe(head.length + n)
      head.copy(frame, 0)
      frame.set(payload, head.length)
      this.ws.send(frame, SEND_WHOLE)
    } else {
      this.ws.send(head, SEND_FIRST)
      this.ws.send(payload, SEND_WHOLE)
    }
  }

  writeHeartbeat(): void {
    if (this.#closed) return
    this.#cork()
    this.ws.send(EMPTY, SEND_WHOLE)
  }

  pause(): void {
    this.ws.pause()
  }

  resume(): void {
    this.ws.resume()
  }

  /** Closes with the error and the close code that goes with it. */
  #fail(error: ThroughlineError, wsCode?: number): void {
    if (this.#closed) return
    this.#closeWith(error, wsCode ?? wsCloseCodeFor(error))
  }

  close(error?: ThroughlineError): void {
    if (this.#closed) return
    this.#closeWith(error, error === undefined ? WS_CLOSE.NORMAL : wsCloseCodeFor(error))
  }

  #closeWith(error: ThroughlineError | undefined, wsCode: number): void {
    this.#closed = true
    this.#error ??= error
    const ws = this.ws
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CLOSING) {
      if (ws.isPaused) ws.resume() // so that the peer's close frame is read
      try {
        // the reason is the error code only (a close reason holds at most 123 bytes)
        ws.close(wsCode, error?.code ?? '')
      } catch {
        ws.terminate()
      }
    }
    // a peer that never answers the close handshake is cut off after WS_CLOSE_TIMEOUT_MS (ws's closeTimeout)
    // report at once; the 'close' event is ignored after this
    this.onClose(this.#error)
    this.onClose = () => {}
  }
}

/** TLS material of a wss:// listener. */
export interface WebSocketServerTls {
  cert: string | Buffer
  key: string | Buffer
  ca?: string | Buffer | (string | Buffer)[]
}

/** TLS options of wss:// dials. */
export interface WebSocketClientTls {
  /** CA certificate(s) to trust instead of the system store (pins a private CA or a self-signed server). */
  ca?: string | Buffer | (string | Buffer)[]
  /** Verify the server certificate (default true). */
  rejectUnauthorized?: boolean
  /** Client certificate and key, for servers that ask for one. */
  cert?: string | Buffer
  key?: string | Buffer
}

export interface WebSocketTransportOptions extends TransportOptions {
  tls?: WebSocketClientTls
}

export interface WebSocketListenOptions extends ListenOptions {
  /** Serve wss:// with this certificate and key (default: plain ws://). */
  tls?: WebSocketServerTls
}

export interface WebSocketListener extends Listener {
  readonly host: string
  readonly port: number
  /** True for a wss:// listener. */
  readonly secure: boolean
  /** The address value a dialler uses: `HOST:PORT` or `wss:HOST:PORT`. */
  readonly peer: string
  /** `ws://HOST:PORT/` or `wss://HOST:PORT/`. */
  readonly url: string
}

/** `HOST:PORT` or `wss:HOST:PORT` → its URL. */
export function wsUrl(peer: string): string {
  const secure = peer.startsWith(WSS_PREFIX)
  return `${secure ? 'wss' : 'ws'}://${secure ? peer.slice(WSS_PREFIX.length) : peer}/`
}

/** Checks a ws peer value: `HOST:PORT` or `wss:HOST:PORT`. */
export function checkWsPeer(peer: string): string {
  checkHostPort(peer.startsWith(WSS_PREFIX) ? peer.slice(WSS_PREFIX.length) : peer)
  return peer
}

/** Formats a connection error: its code (e.g. the TLS verification code) and message. */
function describe(err: Error & { code?: string }): string {
  return err.code !== undefined && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message
}

/**
 * The WebSocket transport on Node: `node.addTransport(new WebSocketTransport(node))`, then
 * `listen()` / routes through `/ws/HOST:PORT` or `/wss/HOST:PORT`.
 */
export class WebSocketTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.WS
  readonly name = 'ws'
  readonly tls: WebSocketClientTls | undefined

  /** @param options.tls TLS options of wss:// dials (`ca` pins a CA, `rejectUnauthorized`). */
  constructor(node: Node, options: WebSocketTransportOptions = {}) {
    super(node, options, 'ws')
    this.tls = options.tls
  }

  protected checkPeer(peer: string): string {
    return checkWsPeer(peer)
  }

  protected dialLink(peer: string, signal: AbortSignal): Promise<Link> {
    const secure = peer.startsWith(WSS_PREFIX)
    const hostPort = secure ? peer.slice(WSS_PREFIX.length) : peer
    const url = wsUrl(peer)
    const options: ClientOptions & { closeTimeout: number } = {
      perMessageDeflate: false, // the ws client offers it by default
      maxPayload: this.options.maxFrameSize,
      closeTimeout: WS_CLOSE_TIMEOUT_MS,
      followRedirects: false,
    }
    if (secure && this.tls !== undefined) {
      const { ca, rejectUnauthorized, cert, key } = this.tls
      if (ca !== undefined) options.ca = ca
      if (rejectUnauthorized !== undefined) options.rejectUnauthorized = rejectUnauthorized
      if (cert !== undefined) options.cert = cert
      if (key !== undefined) options.key = key
    }
    return new Promise<Link>((resolve, reject) => {
      const ws = new WebSocket(url, options)
      const onAbort = (): void => {
        ws.terminate()
        reject(tlError('ERR_ABORTED', `dial to ws ${peer} aborted`))
      }
      const onError = (err: Error & { code?: string }): void => {
        signal.removeEventListener('abort', onAbort)
        ws.terminate()
        reject(tlError('ERR_CONNECTION_REFUSED', `cannot connect to ${url}: ${describe(err)}`, { cause: err, details: { code: err.code } }))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      ws.once('error', onError)
      ws.once('open', () => {
        signal.removeEventListener('abort', onAbort)
        ws.removeListener('error', onError)
        resolve(new WebSocketLink(ws, hostPort))
      })
    })
  }

  /**
   * Listens on `HOST:PORT` (port 0 picks a free one), serving ws:// or, with `options.tls`,
   * wss://. Messages from accepted connections may reach only `options.allow` (deny by default).
   * Plain HTTP requests get 426 Upgrade Required.
   */
  async listen(hostPort: string, options: WebSocketListenOptions = {}): Promise<WebSocketListener> {
    const { host, port } = splitHostPort(hostPort)
    const secure = options.tls !== undefined
    // the opening handshake (TLS, then the HTTP upgrade) must finish within the connect timeout
    const handshakeMs = Math.max(1000, this.options.connectTimeout)
    const httpOptions: http.ServerOptions = { headersTimeout: handshakeMs, requestTimeout: handshakeMs }
    let server: http.Server
    try {
      server = secure
        ? https.createServer({ ...httpOptions, cert: options.tls!.cert, key: options.tls!.key, ca: options.tls!.ca, handshakeTimeout: handshakeMs })
        : http.createServer(httpOptions)
    } catch (err) {
      throw tlError('ERR_LISTEN_FAILED', `cannot listen on wss ${hostPort}: ${(err as Error).message}`, { cause: err })
    }
    const wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: this.options.maxFrameSize,
      clientTracking: false,
      closeTimeout: WS_CLOSE_TIMEOUT_MS,
    } as ConstructorParameters<typeof WebSocketServer>[0] & { closeTimeout: number })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(tlError('ERR_LISTEN_FAILED', `cannot listen on ${secure ? 'wss' : 'ws'} ${hostPort}: ${err.code ?? err.message}`, { cause: err })),
      )
      server.listen({ host, port }, () => {
        server.removeAllListeners('error')
        resolve()
      })
    })
    const bound = server.address() as net.AddressInfo
    const boundText = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`
    const scheme = secure ? 'wss' : 'ws'
    const flow = new AllowList(`${scheme} listener ${boundText}`, options.allow ?? [], { transit: options.transit ?? false })
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`
      wss.handleUpgrade(req, socket, head, (ws) => {
        this.accept(new WebSocketLink(ws, remote), flow, remote)
      })
    })
    server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(426, { Connection: 'close', Upgrade: 'websocket', 'Content-Type': 'text/plain' })
      res.end('this is a throughline WebSocket endpoint\n')
    })
    // bytes that are not an HTTP request (or a failed TLS handshake): drop that socket only
    server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      this.logger.debug('bad request before the WebSocket handshake', { listener: boundText, error: err.code ?? err.message })
      socket.destroy()
    })
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      this.logger.debug('TLS handshake failed', { listener: boundText, error: err.code ?? err.message })
    })
    server.on('error', (err) => this.logger.error('listener error', { listener: boundText, error: err }))
    const peer = secure ? `${WSS_PREFIX}${boundText}` : boundText
    const listener: WebSocketListener = {
      address: boundText,
      host: bound.address,
      port: bound.port,
      secure,
      peer,
      url: wsUrl(peer),
      flow,
      // stops accepting at once; connections already accepted are closed by the transport's stop
      close: async () => {
        this.listeners.delete(listener)
        if (server.listening) server.close()
      },
    }
    this.listeners.add(listener)
    options.signal?.addEventListener('abort', () => void listener.close(), { once: true })
    this.logger.info('listening', { address: listener.url })
    return listener
  }
}
