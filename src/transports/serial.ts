/**
 * The serial transport. Addresses `3#PATH` (the local port: `3#/dev/ttyUSB0`); route text
 * `/serial/dev/ttyUSB0`.
 *
 * A serial line joins exactly two ports, so an address names this node's end of it, and
 * "routing to `3#/dev/ttyUSB0`" means "out through that port".
 *
 * - `listen(path)` opens the port and adopts it as an inbound connection under the listener's
 *   allow-list. Both ends of a line usually listen. The listener keeps the port: when the port
 *   fails or the device disappears it is reopened with exponential backoff (same path, new
 *   device) without restarting the node, and messages routed to it meanwhile wait in a bounded
 *   queue. Routes naming a listened port use its connection.
 * - A route to a port that is not listened on dials it: the port is opened by a connection that
 *   closes it again when it ends (re-dialled with backoff when `connect(path, { persistent })`).
 *
 * Wire: the framing of serial-framing.ts (COBS with a 0x00 delimiter, CRC-32C per frame,
 * fragments of at most `mtu` bytes reassembled at the other end, resynchronisation after
 * garbage). A session ends by sending a close frame: the peer's connection then ends too, and a
 * listened port starts a new session on the same open port at once.
 *
 * The port is the real `serialport` package (loaded on first use), or any byte duplex from the
 * `openPort` option (tests, other drivers).
 *
 * @module
 */
import { stat, type Stats } from 'node:fs'
import type { Duplex } from 'node:stream'
import { tlError, type ThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { ADDRESS_TYPE } from '../router/constants.ts'
import type { Message } from '../router/message.ts'
import type { Node } from '../router/node.ts'
import { BaseTransport, type Listener } from './base.ts'
import type { Connection } from './connection.ts'
import {
  type SerialFramingOptions,
  type SerialFramingStats,
  SerialFrameDecoder,
  SerialFrameEncoder,
  createSerialFramingStats,
  resolveSerialFramingOptions,
} from './serial-framing.ts'
import type { Link, ListenOptions, TransportOptions } from './types.ts'

/** Default line speed. A pseudo-terminal ignores it. */
export const DEFAULT_SERIAL_BAUD_RATE = 115_200
/** How often an open port's path is checked for the device it was opened on (ms). */
export const DEFAULT_SERIAL_PRESENCE_INTERVAL_MS = 1_000
/** How long a closing port waits for queued writes (its close frame) before it is closed anyway (ms). */
const CLOSE_FLUSH_MS = 250

/** Opens a port: a byte duplex, open when the promise resolves. */
export type SerialPortOpener = (path: string, baudRate: number) => Duplex | Promise<Duplex>

export interface SerialTransportOptions extends TransportOptions {
  /** Line speed of the ports this transport opens. Default 115200. */
  baudRate?: number
  /** Fragment bytes per link frame. Default 256. Both ends of a line must agree. */
  mtu?: number
  /** Drop a partial message that received nothing for this long (ms). Default 5000. */
  reassemblyTimeout?: number
  /** Bytes that partial messages of one port may hold. Default 2 × maxFrameSize. */
  maxReassemblyBytes?: number
  /** Partial messages held per port. Default 4. */
  maxPartialMessages?: number
  /** Opens a port (default: the `serialport` package). Tests pass in-memory duplexes here. */
  openPort?: SerialPortOpener
  /**
   * How often (ms) the path of an open port is checked for the device it was opened on; a path
   * that is gone or names another device means the device disappeared. Default 1000; 0 turns
   * it off. (A pseudo-terminal whose other side went away can read as end-of-file for ever
   * without an error, so reads alone do not always notice; writes and this check do.)
   * Paths that are not files (COMn, in-memory ports) are not checked.
   */
  presenceInterval?: number
}

export interface SerialListenOptions extends ListenOptions {
  /** Line speed of this port (default: the transport's). */
  baudRate?: number
}

/** A listened port. */
export interface SerialListener extends Listener {
  readonly path: string
  readonly baudRate: number
  /** The connection over the port while it is open and in a session. */
  readonly connection: Connection | undefined
  /** Times the port was opened (1 + reopens after losses). */
  readonly opens: number
  /** Framing counters of this port, summed over its sessions. */
  readonly stats: SerialFramingStats
}

/** Opens `path` with the `serialport` package (loaded on first use). */
export async function openSerialPort(path: string, baudRate: number): Promise<Duplex> {
  const { SerialPort } = await import('serialport')
  return new Promise<Duplex>((resolve, reject) => {
    const port = new SerialPort({ path, baudRate, autoOpen: false })
    port.open((err) => {
      if (err) return reject(err)
      keepPollerInterest(port.port)
      resolve(port)
    })
  })
}

/** The part of @serialport/bindings-cpp's unix Poller (`LinuxPortBinding.poller`) used here. */
interface UnixPoller {
  poll(flag?: number): void
  listenerCount(event: string): number
}
const UV_READABLE = 1
const UV_WRITABLE = 2

/**
 * Works around a stall in @serialport/bindings-cpp 13 on unix. Its Poller starts libuv polling
 * for only the event just asked for (`uv_poll_start(handle, events)` instead of the union it
 * keeps), so when a read waits for "readable" while a write waits for "writable" (the output
 * buffer was full), whichever asked last wins and the other waits for an event of the winner's
 * kind. A sender whose peer sends nothing back then stops until the peer's next heartbeat
 * (seen over a pty under load as 10 s stalls). Here every poll asks for every event that
 * someone is waiting for. A binding without a poller (Windows) is left alone.
 *
 * @internal exported for its test
 */
export function keepPollerInterest(binding: unknown): void {
  const poller = (binding as { poller?: unknown } | undefined)?.poller as UnixPoller | undefined
  if (poller === undefined || typeof poller.poll !== 'function' || typeof poller.listenerCount !== 'function') return
  const poll = poller.poll.bind(poller)
  poller.poll = (flag = 0) => {
    let f = flag
    if (poller.listenerCount('readable') > 0) f |= UV_READABLE
    if (poller.listenerCount('writable') > 0) f |= UV_WRITABLE
    poll(f)
  }
}

/** A port just opened, with the identity of the device file it was opened on (if it is one). */
interface OpenedPort {
  port: Duplex
  device: string | undefined
}

const deviceId = (s: Stats): string => `${s.dev}:${s.ino}:${s.rdev}`

function deviceOf(path: string): Promise<string | undefined> {
  return new Promise((resolve) => stat(path, (err, s) => resolve(err ? undefined : deviceId(s))))
}

type ClosablePort = Duplex & { close?: (cb?: (err: Error | null) => void) => void; isOpen?: boolean }

function closePortNow(port: Duplex): void {
  const p = port as ClosablePort
  if (typeof p.close === 'function') {
    // a serialport stream: destroy() would not close the device
    if (p.isOpen !== false) p.close(() => {})
  } else {
    p.destroy()
  }
}

/**
 * An open port: its received bytes go to the current session's link; between sessions they
 * are held (and the port paused) until the next session takes them.
 */
class PortHandle {
  readonly path: string
  readonly port: Duplex
  session: SerialLink | undefined
  #held: Uint8Array[] = []
  #closed = false
  #onLost: (err: ThroughlineError) => void
  #presence: NodeJS.Timeout | undefined

  constructor(path: string, opened: OpenedPort, presenceInterval: number, onLost: (err: ThroughlineError) => void) {
    const port = opened.port
    this.path = path
    this.port = port
    this.#onLost = onLost
    const device = opened.device
    if (device !== undefined && presenceInterval > 0) {
      this.#presence = setInterval(() => {
        stat(path, (err, s) => {
          if (err || deviceId(s) !== device) this.#lost(tlError('ERR_CONNECTION_CLOSED', `serial ${path}: the device disappeared`))
        })
      }, presenceInterval)
      this.#presence.unref()
    }
    port.on('data', (chunk: Buffer) => this.#data(chunk))
    port.on('drain', () => this.session?.onDrain())
    port.on('error', (err: Error) => this.#lost(tlError('ERR_CONNECTION_CLOSED', `serial ${path}: ${err.message}`, { cause: err })))
    port.on('close', (err?: Error & { disconnected?: boolean }) =>
      this.#lost(tlError('ERR_CONNECTION_CLOSED', `serial ${path} ${err?.disconnected === true ? 'disconnected' : 'closed'}${err ? `: ${err.message}` : ''}`, err ? { cause: err } : undefined)),
    )
    port.on('end', () => this.#lost(tlError('ERR_CONNECTION_CLOSED', `serial ${path}: the stream ended`)))
  }

  get closed(): boolean {
    return this.#closed
  }

  #data(chunk: Uint8Array): void {
    if (this.#closed) return
    const s = this.session
    if (s !== undefined) s.receive(chunk)
    else this.hold(chunk, false)
  }

  /** Keeps bytes for the next session (`front`: before what is held already). */
  hold(chunk: Uint8Array, front: boolean): void {
    if (chunk.length === 0 || this.#closed) return
    if (front) this.#held.unshift(chunk)
    else this.#held.push(chunk)
    this.port.pause()
  }

  /** Makes `link` the session: it gets the held bytes first, then the port flows again. */
  attach(link: SerialLink): void {
    this.session = link
    while (this.#held.length > 0 && this.session === link && !link.closed) link.receive(this.#held.shift()!)
    if (this.session === link && !link.closed && !link.paused) this.port.resume()
  }

  /** Ends the session `link` (if it is the current one); the port is paused until the next. */
  detach(link: SerialLink): void {
    if (this.session !== link) return
    this.session = undefined
    if (!this.#closed) this.port.pause()
  }

  write(bytes: Uint8Array): boolean {
    if (this.#closed) return true
    return this.port.write(bytes)
  }

  /** Closes the port once what was written has gone out (or after a short wait). */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#presence)
    this.session = undefined
    this.#held = []
    let done = false
    const closeNow = (): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      closePortNow(this.port)
    }
    const timer = setTimeout(closeNow, CLOSE_FLUSH_MS)
    timer.unref()
    // a last 0x00 (idle fill): its callback runs once every earlier write is done
    if (this.port.writable) this.port.write(Buffer.of(0), closeNow)
    else closeNow()
  }

  #lost(err: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#presence)
    this.#held = []
    closePortNow(this.port)
    const s = this.session
    this.session = undefined
    s?.portLost(err)
    this.#onLost(err)
  }
}

/** One session over an open port, as a frame link. */
export class SerialLink implements Link {
  readonly remote: string
  readonly path: string
  readonly decoder: SerialFrameDecoder
  readonly #encoder: SerialFrameEncoder
  readonly #port: PortHandle
  readonly #ownsPort: boolean
  readonly #onEnd: ((link: SerialLink) => void) | undefined
  #closed = false
  #paused = false
  #peerClosed = false
  #started = false
  #sweep: NodeJS.Timeout
  onFrame: (frame: Uint8Array) => void = () => {}
  onClose: (error?: ThroughlineError) => void = () => {}
  onDrain: () => void = () => {}

  /** @internal the transport makes links; `ownsPort`: close the port with the link */
  constructor(port: PortHandle, framing: SerialFramingOptions, ownsPort: boolean, onEnd?: (link: SerialLink) => void, stats?: SerialFramingStats) {
    this.#port = port
    this.path = port.path
    this.remote = port.path
    this.#ownsPort = ownsPort
    this.#onEnd = onEnd
    this.#encoder = new SerialFrameEncoder(framing)
    this.decoder = new SerialFrameDecoder(
      {
        onMessage: (m) => {
          if (!this.#closed) this.onFrame(m)
        },
        onClose: () => {
          this.#peerClosed = true
          this.close()
        },
      },
      framing,
      stats,
    )
    // partial messages that stopped receiving fragments are dropped now and then; the time this
    // process itself could not run (a stalled event loop) does not count against them, and
    // bytes that arrived meanwhile are read before the check
    const timeout = this.decoder.options.reassemblyTimeout
    const interval = Math.max(10, Math.min(1000, Math.floor(timeout / 2)))
    const now = this.decoder.options.now
    let due = now() + interval
    this.#sweep = setInterval(() => {
      const t = now()
      const late = t - due
      due = t + interval
      if (this.#paused || this.#closed) return
      if (late > timeout / 2) {
        this.decoder.refresh(t)
        return
      }
      setImmediate(() => {
        if (!this.#paused && !this.#closed) this.decoder.expire()
      })
    }, interval)
    this.#sweep.unref()
  }

  /**
   * @internal Starts the session, once the Connection has taken the link's callbacks: bytes the
   * port held go to the link first.
   */
  start(): void {
    if (this.#closed || this.#started) return
    this.#started = true
    this.#port.attach(this)
  }

  get closed(): boolean {
    return this.#closed
  }

  get paused(): boolean {
    return this.#paused
  }

  /** Framing counters of this link (shared with its port's other sessions when listened). */
  get stats(): SerialFramingStats {
    return this.decoder.stats
  }

  /** @internal bytes from the port */
  receive(chunk: Uint8Array): void {
    if (this.#closed) {
      this.#port.hold(chunk, true)
      return
    }
    const used = this.decoder.push(chunk)
    // the session ended inside this chunk: the rest belongs to the next one
    if (used < chunk.length) this.#port.hold(chunk.subarray(used), true)
  }

  writeFrame(head: Buffer, payload: Uint8Array): boolean {
    if (this.#closed) return true
    return this.#port.write(this.#encoder.encode(head, payload))
  }

  writeHeartbeat(): void {
    if (!this.#closed) this.#port.write(this.#encoder.encode())
  }

  pause(): void {
    this.#paused = true
    if (this.#port.session === this) this.#port.port.pause()
  }

  resume(): void {
    if (!this.#paused) return
    this.#paused = false
    // time spent paused, with the bytes waiting unread, does not count against reassembly
    this.decoder.refresh()
    if (this.#port.session === this && !this.#closed) this.#port.port.resume()
  }

  close(error?: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    this.decoder.halt()
    clearInterval(this.#sweep)
    if (this.#started && !this.#peerClosed) this.#port.write(this.#encoder.encodeClose())
    this.#port.detach(this)
    if (this.#ownsPort) this.#port.close()
    this.onClose(error)
    this.onClose = () => {}
    this.#onEnd?.(this)
  }

  /** @internal the port failed or disappeared */
  portLost(error: ThroughlineError): void {
    if (this.#closed) return
    this.#closed = true
    this.decoder.halt()
    clearInterval(this.#sweep)
    this.onClose(error)
    this.onClose = () => {}
  }
}

interface ListenedPort {
  path: string
  baudRate: number
  flow: AllowList
  listener: SerialListener
  port: PortHandle | undefined
  conn: Connection | undefined
  /** Messages routed to the port while it is being reopened. */
  pending: Message[]
  stats: SerialFramingStats
  opens: number
  delay: number
  timer: NodeJS.Timeout | undefined
  closed: boolean
}

/** The serial transport: `node.addTransport(new SerialTransport(node))`, then `listen(path)` / routes. */
export class SerialTransport extends BaseTransport {
  readonly type = ADDRESS_TYPE.SERIAL
  readonly name = 'serial'
  readonly baudRate: number
  readonly framing: SerialFramingOptions
  readonly presenceInterval: number
  readonly #openPort: SerialPortOpener
  #listened = new Map<string, ListenedPort>()

  constructor(node: Node, options: SerialTransportOptions = {}) {
    super(node, options, 'serial')
    this.baudRate = options.baudRate ?? DEFAULT_SERIAL_BAUD_RATE
    if (!Number.isInteger(this.baudRate) || this.baudRate <= 0) throw tlError('ERR_INVALID_ARGUMENT', `serial baud rate must be a positive integer (got ${this.baudRate})`)
    const framing: SerialFramingOptions = {
      maxMessageSize: this.options.maxFrameSize,
      maxReassemblyBytes: options.maxReassemblyBytes ?? 2 * this.options.maxFrameSize,
    }
    if (options.mtu !== undefined) framing.mtu = options.mtu
    if (options.reassemblyTimeout !== undefined) framing.reassemblyTimeout = options.reassemblyTimeout
    if (options.maxPartialMessages !== undefined) framing.maxPartialMessages = options.maxPartialMessages
    resolveSerialFramingOptions(framing) // checks them now
    this.framing = framing
    this.#openPort = options.openPort ?? openSerialPort
    this.presenceInterval = options.presenceInterval ?? DEFAULT_SERIAL_PRESENCE_INTERVAL_MS
  }

  protected checkPeer(peer: string): string {
    if (typeof peer !== 'string' || !/^(\/[^\0]*[^/\0]|COM\d+)$/i.test(peer)) {
      throw tlError('ERR_TRANSPORT_ADDRESS', `"${peer}" is not a serial port path (an absolute path such as /dev/ttyUSB0, or COMn)`)
    }
    return peer
  }

  async #open(path: string, baudRate: number, signal?: AbortSignal): Promise<OpenedPort> {
    if (signal?.aborted === true) throw tlError('ERR_ABORTED', `opening serial ${path} was aborted`)
    const opening = Promise.resolve()
      .then(() => this.#openPort(path, baudRate))
      .then(async (port) => ({ port, device: await deviceOf(path) }))
    if (signal === undefined) return opening
    return new Promise<OpenedPort>((resolve, reject) => {
      const onAbort = (): void => reject(tlError('ERR_ABORTED', `opening serial ${path} was aborted`))
      signal.addEventListener('abort', onAbort, { once: true })
      opening.then(
        (port) => {
          signal.removeEventListener('abort', onAbort)
          // too late: the caller gave up on this port
          if (signal.aborted) closePortNow(port.port)
          else resolve(port)
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort)
          reject(err)
        },
      )
    })
  }

  protected async dialLink(path: string, signal: AbortSignal): Promise<Link> {
    if (this.#listened.has(path)) {
      throw tlError('ERR_SERIAL_PORT_IN_USE', `serial ${path} is held by its listener, which is reopening it`)
    }
    let port: OpenedPort
    try {
      port = await this.#open(path, this.baudRate, signal)
    } catch (err) {
      if (signal.aborted) throw err
      throw tlError('ERR_CONNECTION_REFUSED', `cannot open serial ${path}: ${(err as Error).message}`, { cause: err })
    }
    // a fresh port holds no bytes: nothing reaches the link before the Connection takes it
    const link = new SerialLink(new PortHandle(path, port, this.presenceInterval, () => {}), this.framing, true)
    link.start()
    return link
  }

  // ---------------------------------------------------------------- routing

  /** The live connection through `path`: its listener's, or a dialled one. */
  override connectionTo(path: string): Connection | undefined {
    const l = this.#listened.get(path)
    if (l !== undefined) return l.conn !== undefined && !l.conn.closed ? l.conn : undefined
    return super.connectionTo(path)
  }

  override route(msg: Message): void {
    const next = msg.onward[0]!
    const l = this.#listened.get(next.value)
    if (l !== undefined && this.connectionTo(next.value) === undefined) {
      // the listened port is between sessions or being reopened: wait for it
      if (l.pending.length >= this.options.maxPendingMessages) {
        this.node.drop('queue-full', tlError('ERR_CONNECTION_CLOSED', `more than ${this.options.maxPendingMessages} messages wait for serial ${l.path}`), msg, next.text)
      } else {
        l.pending.push(msg)
      }
      return
    }
    super.route(msg)
  }

  #sendVia(conn: Connection, msg: Message): void {
    const onward = msg.onward.slice()
    onward[0] = conn.address
    this.node.route({ onward, return: msg.return, payload: msg.payload, local: msg.local })
  }

  // ---------------------------------------------------------------- listening

  /**
   * Opens the port at `path` and adopts it as an inbound connection: messages arriving on it
   * may reach only `options.allow` (deny by default). The port is reopened with backoff
   * whenever it is lost, until the listener is closed.
   */
  async listen(path: string, options: SerialListenOptions = {}): Promise<SerialListener> {
    if (this.stopped) throw tlError('ERR_STOPPED', 'serial transport is stopped')
    try {
      this.checkPeer(path)
    } catch (err) {
      throw tlError('ERR_LISTEN_FAILED', `cannot listen on serial "${path}": not a port path`, { cause: err })
    }
    if (this.#listened.has(path) || super.connectionTo(path) !== undefined) {
      throw tlError('ERR_SERIAL_PORT_IN_USE', `serial ${path} is already open in this node`)
    }
    const baudRate = options.baudRate ?? this.baudRate
    let port: OpenedPort
    try {
      port = await this.#open(path, baudRate, options.signal)
    } catch (err) {
      throw tlError('ERR_LISTEN_FAILED', `cannot open serial ${path}: ${(err as Error).message}`, { cause: err })
    }
    if (this.stopped || this.#listened.has(path)) {
      closePortNow(port.port)
      throw tlError(this.stopped ? 'ERR_STOPPED' : 'ERR_SERIAL_PORT_IN_USE', `serial ${path} ${this.stopped ? 'transport stopped while opening' : 'is already open in this node'}`)
    }
    const flow = new AllowList(`serial listener ${path}`, options.allow ?? [], { transit: options.transit ?? false })
    const l: ListenedPort = {
      path,
      baudRate,
      flow,
      listener: undefined as unknown as SerialListener,
      port: undefined,
      conn: undefined,
      pending: [],
      stats: createSerialFramingStats(),
      opens: 0,
      delay: this.options.reconnectInitialDelay,
      timer: undefined,
      closed: false,
    }
    const listener: SerialListener = {
      address: path,
      path,
      baudRate,
      flow,
      get connection() {
        return l.conn !== undefined && !l.conn.closed ? l.conn : undefined
      },
      get opens() {
        return l.opens
      },
      stats: l.stats,
      close: async () => this.#closeListener(l),
    }
    l.listener = listener
    this.#listened.set(path, l)
    this.listeners.add(listener)
    options.signal?.addEventListener('abort', () => void listener.close(), { once: true })
    this.#adopt(l, port)
    this.logger.info('listening', { address: path, baudRate })
    return listener
  }

  #adopt(l: ListenedPort, port: OpenedPort): void {
    l.opens++
    l.port = new PortHandle(l.path, port, this.presenceInterval, (err) => this.#portLost(l, err))
    this.#startSession(l)
  }

  #startSession(l: ListenedPort): void {
    const port = l.port
    if (l.closed || this.stopped || port === undefined || port.closed) return
    let conn: Connection | undefined
    const link = new SerialLink(port, this.framing, false, () => this.#sessionEnded(l, conn), l.stats)
    conn = this.accept(link, l.flow, l.path)
    l.conn = conn
    if (conn === undefined) return
    link.start()
    l.delay = this.options.reconnectInitialDelay
    // messages that waited for the port go first, in order
    const pending = l.pending
    l.pending = []
    for (const m of pending) this.#sendVia(conn, m)
  }

  /** A session ended with the port still open: the next one starts on the same port. */
  #sessionEnded(l: ListenedPort, conn: Connection | undefined): void {
    if (l.conn === conn) l.conn = undefined
    if (l.closed || this.stopped || l.port === undefined || l.port.closed) return
    // later, not now: when the node is stopping its connections, it will be stopping
    // (or the listener closed) by then. A session that was refused waits the backoff.
    const delay = conn === undefined ? this.#nextDelay(l) : 0
    clearTimeout(l.timer)
    l.timer = setTimeout(() => {
      l.timer = undefined
      if (this.node.running && l.conn === undefined) this.#startSession(l)
    }, delay)
  }

  #nextDelay(l: ListenedPort): number {
    const delay = Math.round(l.delay * (0.75 + Math.random() * 0.5))
    l.delay = Math.min(l.delay * 2, this.options.reconnectMaxDelay)
    return delay
  }

  #portLost(l: ListenedPort, err: ThroughlineError): void {
    if (l.port !== undefined && !l.port.closed) return
    l.port = undefined
    l.conn = undefined
    clearTimeout(l.timer) // a session that was about to start on the lost port
    l.timer = undefined
    this.logger.warn('serial port lost; reopening', { path: l.path, code: err.code, error: err.message })
    this.#scheduleReopen(l)
  }

  #scheduleReopen(l: ListenedPort): void {
    if (l.closed || this.stopped || l.timer !== undefined) return
    l.timer = setTimeout(() => {
      l.timer = undefined
      if (l.closed || this.stopped) return
      this.#open(l.path, l.baudRate).then(
        (port) => {
          if (l.closed || this.stopped) {
            closePortNow(port.port)
            return
          }
          this.logger.info('serial port reopened', { path: l.path })
          this.#adopt(l, port)
        },
        (err: unknown) => {
          this.logger.debug('serial port reopen failed', { path: l.path, error: (err as Error).message })
          this.#scheduleReopen(l)
        },
      )
    }, this.#nextDelay(l))
  }

  async #closeListener(l: ListenedPort): Promise<void> {
    if (l.closed) return
    l.closed = true
    clearTimeout(l.timer)
    l.timer = undefined
    this.#listened.delete(l.path)
    this.listeners.delete(l.listener)
    l.conn?.close()
    l.conn = undefined
    l.port?.close()
    l.port = undefined
    const err = tlError('ERR_CONNECTION_CLOSED', `serial listener ${l.path} closed`)
    for (const m of l.pending) this.node.drop('connection-closed', err, m, `serial ${l.path}`)
    l.pending = []
  }

  /** Framing counters of a listened port, or of the link of a dialled one. */
  stats(path: string): SerialFramingStats | undefined {
    const l = this.#listened.get(path)
    if (l !== undefined) return l.stats
    const c = super.connectionTo(path)
    return c !== undefined ? (c.link as SerialLink).stats : undefined
  }
}
