/**
 * The TCP transport. Addresses `1#HOST:PORT`; route text `/tcp/HOST:PORT`.
 *
 * Wire: each side first sends the version byte, then frames of `u32be length | envelope`
 * (length 0 is a heartbeat). Writes are batched per event-loop turn: see {@link TcpLink}.
 *
 * @module
 */
import net from 'node:net'
import { tlError, type ThroughlineError, isThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { ADDRESS_TYPE } from '../router/constants.ts'
import type { Node } from '../router/node.ts'
import { checkHostPort, splitHostPort } from '../router/route.ts'
import { BaseTransport, type Listener } from './base.ts'
import { CONNECTION_VERSION, DEFAULT_TCP_COALESCE_MAX_PAYLOAD, TCP_BATCH_BYTES, TCP_BATCH_FLUSH_BYTES, TCP_BATCH_MIN_BYTES, TCP_LENGTH_PREFIX } from './constants.ts'
import { byteView, dataViewOf } from '../router/codec.ts'
import { FrameDecoder } from './frame-decoder.ts'
import type { Link, ListenOptions, TransportOptions } from './types.ts'

const VERSION = Buffer.from([CONNECTION_VERSION])
const HEARTBEAT = Buffer.alloc(TCP_LENGTH_PREFIX)

/**
 * A TCP socket as a frame link.
 *
 * Writes: every frame written in one event-loop turn goes into the link's write batch — its length
 * prefix and head always, its payload too when it is at most `coalesceMaxPayload` bytes — and the
 * batch leaves as one socket write at the end of the turn (or as soon as it holds
 * {@link TCP_BATCH_FLUSH_BYTES}, so that the socket's backpressure sees it). A larger payload is
 * written as it is, zero-copy, right after the batch so far. For small messages one write per turn
 * instead of two per frame is most of what a relay hop costs (perf.md §6); the copy is of at most
 * `coalesceMaxPayload` bytes per frame.
 */
export class TcpLink implements Link {
  readonly remote: string
  readonly socket: net.Socket
  readonly coalesceMaxPayload: number
  #decoder: FrameDecoder
  #corked = false
  #closed = false
  #error: ThroughlineError | undefined
  /** The write batch: bytes [#start, #pos) are not yet handed to the socket. */
  #batch: Buffer = EMPTY
  #batchView: DataView = EMPTY_VIEW
  #start = 0
  #pos = 0
  #batchSize = TCP_BATCH_MIN_BYTES
  onFrame: (buf: Uint8Array, start?: number, end?: number) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}
  /** Hands each decoded frame to `onFrame` (one function for the link's life, not one per chunk). */
  readonly #deliver = (buf: Buffer, start: number, end: number): void => this.onFrame(buf, start, end)
  onFramePieces: ((pieces: readonly Uint8Array[], length: number) => boolean) | undefined
  readonly #deliverPieces = (pieces: readonly Buffer[], length: number): boolean => this.onFramePieces?.(pieces, length) ?? false
  readonly #endTurn = (): void => {
    this.#corked = false
    this.#flush()
    this.socket.uncork()
  }

  constructor(socket: net.Socket, maxFrameSize: number, coalesceMaxPayload = DEFAULT_TCP_COALESCE_MAX_PAYLOAD) {
    this.socket = socket
    this.coalesceMaxPayload = coalesceMaxPayload
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`
    this.#decoder = new FrameDecoder(maxFrameSize)
    socket.setNoDelay(true)
    socket.write(VERSION)
    socket.on('data', (chunk: Buffer) => {
      if (this.#closed) return
      try {
        this.#decoder.push(chunk, this.#deliver, this.#deliverPieces)
      } catch (err) {
        this.close(isThroughlineError(err) ? err : tlError('ERR_MALFORMED_ENVELOPE', String(err), { cause: err }))
      }
    })
    socket.on('drain', () => this.onDrain())
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.#error ??= tlError('ERR_CONNECTION_CLOSED', `tcp ${this.remote}: ${err.code ?? err.message}`, { cause: err })
    })
    socket.on('close', () => {
      this.#closed = true
      this.onClose(this.#error)
    })
  }

  /** Corks the socket for the rest of this turn; the batch is written and the socket uncorked on the next tick. */
  #cork(): void {
    if (this.#corked) return
    this.#corked = true
    this.socket.cork()
    process.nextTick(this.#endTurn)
  }

  /** Hands the batched bytes to the socket (one write). */
  #flush(): void {
    if (this.#pos === this.#start) return
    const segment = this.#batch.subarray(this.#start, this.#pos)
    this.#start = this.#pos
    if (!this.#closed) this.socket.write(segment)
  }

  /**
   * Makes room for `n` more bytes in the batch: when it is full, what is there is written and a
   * new buffer is begun, twice the size of the last (from {@link TCP_BATCH_MIN_BYTES} up to
   * {@link TCP_BATCH_BYTES}), so that a quiet connection holds little and a busy one writes big.
   */
  #room(n: number): void {
    if (this.#batch.length - this.#pos >= n) return
    this.#flush()
    if (this.#batch.length > 0) this.#batchSize = Math.min(this.#batchSize * 2, TCP_BATCH_BYTES)
    // the written part stays with the socket until it is sent: the batch goes on in new memory
    this.#batch = Buffer.allocUnsafeSlow(Math.max(this.#batchSize, n))
    this.#batchView = new DataView(this.#batch.buffer, this.#batch.byteOffset, this.#batch.length)
    this.#start = this.#pos = 0
  }

  /** Lets go of the write batch's memory (the connection has been quiet): the next write begins a small one. */
  trim(): void {
    if (this.#corked || this.#pos !== this.#start) return
    this.#batch = EMPTY
    this.#batchView = EMPTY_VIEW
    this.#start = this.#pos = 0
    this.#batchSize = TCP_BATCH_MIN_BYTES
  }

  writeFrame(head: Uint8Array, payload: Uint8Array): boolean {
    return this.writeFrameRange(head, payload, 0, payload.length)
  }

  /**
   * Begins a frame in the batch: the length prefix of a `head` followed by `n` payload bytes, then
   * the head, with room left for `room` more bytes. The batch position is after the head.
   */
  #begin(head: Uint8Array, n: number, room: number): void {
    const h = head.length
    const length = h + n
    this.#cork()
    this.#room(TCP_LENGTH_PREFIX + h + room)
    const b = this.#batch
    const p = this.#pos
    b[p] = length >>> 24
    b[p + 1] = (length >>> 16) & 0xff
    b[p + 2] = (length >>> 8) & 0xff
    b[p + 3] = length & 0xff
    this.#pos = copyBytes(b, this.#batchView, head, 0, h, p + TCP_LENGTH_PREFIX)
  }

  writeFrameRange(head: Uint8Array, buf: Uint8Array, start: number, end: number): boolean {
    const n = end - start
    if (n <= this.coalesceMaxPayload) {
      this.#begin(head, n, n)
      this.#pos = copyBytes(this.#batch, this.#batchView, buf, start, end, this.#pos)
      if (this.#pos - this.#start >= TCP_BATCH_FLUSH_BYTES) this.#flush()
    } else {
      this.#begin(head, n, 0)
      this.#flush()
      this.socket.write(start === 0 && end === buf.length ? buf : byteView(buf, start, end))
    }
    return !this.socket.writableNeedDrain
  }

  writeFramePieces(head: Uint8Array, pieces: readonly Uint8Array[], start: number, length: number): boolean {
    this.#begin(head, length, 0)
    this.#flush()
    // the pieces as they are (zero-copy), the first from where the payload begins
    const first = pieces[0]!
    if (start < first.length) this.socket.write(start === 0 ? first : byteView(first, start, first.length))
    for (let i = 1; i < pieces.length; i++) this.socket.write(pieces[i]!)
    return !this.socket.writableNeedDrain
  }

  writeHeartbeat(): void {
    if (this.#batch.length > 0) {
      this.#begin(EMPTY, 0, 0) // an empty frame: its length prefix, 0
      return
    }
    // a quiet connection: no batch to begin for four bytes
    this.#cork()
    this.socket.write(HEARTBEAT)
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  close(error?: ThroughlineError): void {
    if (this.#closed) return
    if (error === undefined) this.#flush() // an orderly close sends what was written before it
    this.#closed = true
    this.#error ??= error
    if (error !== undefined) this.socket.destroy()
    else this.socket.end()
    // report at once; the socket's own 'close' is ignored after this
    this.onClose(this.#error)
    this.onClose = () => {}
  }
}

const EMPTY = Buffer.alloc(0)

/**
 * Copies `src[start, end)` into `dst` (whose DataView is `dstView`) at `p`; returns where it ends in
 * `dst`. Measured here for the short pieces of batched frames: a whole buffer goes by one `set`
 * (about 25 ns for a frame head); a range of up to 128 bytes four bytes at a time through
 * DataViews (about 30 ns for 64 bytes, where `set` of a Uint8Array made over the range costs 65
 * and Buffer#copy with offsets 75); a longer range by that `set`.
 */
function copyBytes(dst: Buffer, dstView: DataView, src: Uint8Array, start: number, end: number, p: number): number {
  const n = end - start
  if (start === 0 && end === src.length) dst.set(src, p)
  else if (n <= 128) {
    const sv = dataViewOf(src)
    let i = 0
    for (; i + 4 <= n; i += 4) dstView.setUint32(p + i, sv.getUint32(start + i, true), true)
    for (; i < n; i++) dst[p + i] = src[start + i]!
  } else dst.set(new Uint8Array(src.buffer, src.byteOffset + start, n), p)
  return p + n
}

const EMPTY_VIEW = new DataView(new ArrayBuffer(0))

/** Options of the TCP transport. */
export interface TcpTransportOptions extends TransportOptions {
  /**
   * Payloads up to this many bytes are copied into a connection's per-turn write batch; larger
   * ones are written zero-copy. 0 copies no payload (every frame then costs the socket two writes).
   * Default {@link DEFAULT_TCP_COALESCE_MAX_PAYLOAD}.
   */
  coalesceMaxPayload?: number
}

export interface TcpListener extends Listener {
  readonly host: string
  readonly port: number
}

/** The TCP transport: `node.addTransport(new TcpTransport(node))`, then `listen()` / routes. */
export class TcpTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.TCP
  readonly name = 'tcp'

  readonly coalesceMaxPayload: number

  constructor(node: Node, options: TcpTransportOptions = {}) {
    super(node, options, 'tcp')
    const c = options.coalesceMaxPayload ?? DEFAULT_TCP_COALESCE_MAX_PAYLOAD
    if (!Number.isInteger(c) || c < 0) throw tlError('ERR_INVALID_ARGUMENT', `coalesceMaxPayload must be a non-negative integer, got ${String(c)}`)
    this.coalesceMaxPayload = c
  }

  protected checkPeer(peer: string): string {
    return checkHostPort(peer)
  }

  protected dialLink(peer: string, signal: AbortSignal): Promise<Link> {
    const { host, port } = splitHostPort(peer)
    return new Promise<Link>((resolve, reject) => {
      const socket = net.connect({ host, port })
      const onAbort = (): void => {
        socket.destroy()
        reject(tlError('ERR_ABORTED', `dial to ${peer} aborted`))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      socket.once('connect', () => {
        signal.removeEventListener('abort', onAbort)
        socket.removeAllListeners('error')
        resolve(new TcpLink(socket, this.options.maxFrameSize, this.coalesceMaxPayload))
      })
      socket.once('error', (err: NodeJS.ErrnoException) => {
        signal.removeEventListener('abort', onAbort)
        reject(tlError('ERR_CONNECTION_REFUSED', `cannot connect to tcp ${peer}: ${err.code ?? err.message}`, { cause: err }))
      })
    })
  }

  /**
   * Listens on `HOST:PORT` (port 0 picks a free one). Messages from accepted connections may
   * reach only `options.allow` (deny by default).
   */
  async listen(hostPort: string, options: ListenOptions = {}): Promise<TcpListener> {
    const { host, port } = splitHostPort(hostPort)
    const server = net.createServer({ noDelay: true })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(tlError('ERR_LISTEN_FAILED', `cannot listen on tcp ${hostPort}: ${err.code ?? err.message}`, { cause: err })),
      )
      server.listen({ host, port }, () => {
        server.removeAllListeners('error')
        resolve()
      })
    })
    const bound = server.address() as net.AddressInfo
    const boundText = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`
    const flow = new AllowList(`tcp listener ${boundText}`, options.allow ?? [], { transit: options.transit ?? false })
    server.on('connection', (socket) => {
      socket.on('error', () => {}) // reported through the link
      const link = new TcpLink(socket, this.options.maxFrameSize, this.coalesceMaxPayload)
      this.accept(link, flow, link.remote)
    })
    server.on('error', (err) => this.logger.error('listener error', { listener: boundText, error: err }))
    const listener: TcpListener = {
      address: boundText,
      host: bound.address,
      port: bound.port,
      flow,
      // stops accepting at once; connections already accepted are closed by the transport's stop
      close: async () => {
        this.listeners.delete(listener)
        if (server.listening) server.close()
      },
    }
    this.listeners.add(listener)
    options.signal?.addEventListener('abort', () => void listener.close(), { once: true })
    this.logger.info('listening', { address: boundText })
    return listener
  }
}
