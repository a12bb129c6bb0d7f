/**
 * The TCP transport. Addresses `1#HOST:PORT`; route text `/tcp/HOST:PORT`.
 *
 * Wire: each side first sends the version byte, then frames of `u32be length | envelope`
 * (length 0 is a heartbeat). Small writes are batched: the socket is corked on the first write
 * of an event-loop turn and uncorked on the next tick, so a burst of frames leaves in one writev.
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
import { CONNECTION_VERSION, TCP_LENGTH_PREFIX } from './constants.ts'
import { FrameDecoder } from './frame-decoder.ts'
import type { Link, ListenOptions, TransportOptions } from './types.ts'

const HEARTBEAT = Buffer.alloc(TCP_LENGTH_PREFIX)
const VERSION = Buffer.from([CONNECTION_VERSION])

/** A TCP socket as a frame link. */
export class TcpLink implements Link {
  readonly headReserve = TCP_LENGTH_PREFIX
  readonly remote: string
  readonly socket: net.Socket
  #decoder: FrameDecoder
  #corked = false
  #closed = false
  #error: ThroughlineError | undefined
  onFrame: (frame: Uint8Array) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}
  /** Hands each decoded frame to `onFrame` (one function for the link's life, not one per chunk). */
  readonly #deliver = (frame: Uint8Array): void => this.onFrame(frame)
  readonly #uncork = (): void => {
    this.#corked = false
    this.socket.uncork()
  }

  constructor(socket: net.Socket, maxFrameSize: number) {
    this.socket = socket
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`
    this.#decoder = new FrameDecoder(maxFrameSize)
    socket.setNoDelay(true)
    socket.write(VERSION)
    socket.on('data', (chunk: Buffer) => {
      if (this.#closed) return
      try {
        this.#decoder.push(chunk, this.#deliver)
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

  #cork(): void {
    if (this.#corked) return
    this.#corked = true
    this.socket.cork()
    process.nextTick(this.#uncork)
  }

  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    const length = head.length - TCP_LENGTH_PREFIX + payload.length
    head[0] = length >>> 24
    head[1] = (length >>> 16) & 0xff
    head[2] = (length >>> 8) & 0xff
    head[3] = length & 0xff
    this.#cork()
    this.socket.write(head)
    if (payload.length > 0) this.socket.write(payload)
    return !this.socket.writableNeedDrain
  }

  writeHeartbeat(): void {
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
    this.#closed = true
    this.#error ??= error
    if (error !== undefined) this.socket.destroy()
    else this.socket.end()
    // report at once; the socket's own 'close' is ignored after this
    this.onClose(this.#error)
    this.onClose = () => {}
  }
}

export interface TcpListener extends Listener {
  readonly host: string
  readonly port: number
}

/** The TCP transport: `node.addTransport(new TcpTransport(node))`, then `listen()` / routes. */
export class TcpTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.TCP
  readonly name = 'tcp'

  constructor(node: Node, options: TransportOptions = {}) {
    super(node, options, 'tcp')
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
        resolve(new TcpLink(socket, this.options.maxFrameSize))
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
      const link = new TcpLink(socket, this.options.maxFrameSize)
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
