/**
 * Transports to a TPM 2.0: one method, `send(command) → response`, as go-tpm's `transport.TPM`.
 *
 * Endpoints (see {@link parseTpmEndpoint}):
 * - `unix:PATH` — swtpm's data socket (`swtpm socket --server type=unixio,path=PATH`);
 * - `tcp:HOST:PORT` — swtpm's TCP data port (`--server type=tcp,port=PORT`), `[v6]:PORT` accepted;
 * - `/dev/tpmrm0` (any `/dev/…` path, or `device:PATH`) — the Linux kernel resource manager.
 *
 * Framing is raw: the command bytes are written as they are (`tag u16 ‖ size u32 ‖ cc u32 ‖ …`) and
 * the response is read up to the size in its header. The size is checked against
 * `maxResponseSize` (default 4096, the TPM's MAX_RESPONSE_SIZE) as soon as the first 6 bytes are
 * in, before anything is allocated for the body; a bigger or smaller size is `ERR_TPM_TRANSPORT`
 * and the connection is dropped (its framing can no longer be trusted).
 *
 * Commands are serialized: one in flight per transport, the rest wait in a FIFO queue (swtpm
 * serves one client connection at a time and the TPM is single-threaded anyway). The socket is
 * opened lazily on the first command and re-opened on the next command after a failure.
 *
 * Errors: `ERR_TPM_TRANSPORT` (cannot connect/open, connection lost, bad framing, closed
 * transport), `ERR_TIMEOUT` (a command took longer than `timeoutMs`; the connection is dropped),
 * `ERR_ABORTED` (the caller's signal fired), `ERR_INVALID_ARGUMENT` (bad endpoint or command).
 *
 * The device transport is **not tested here** (no TPM device in the test machine): it opens the
 * character device read-write, writes one command and reads one response with `fs` file handles
 * (libuv's thread pool). A device read cannot be cancelled, so after a timeout or an abort the
 * caller is answered at once but the queue waits for the device to answer before the next command.
 *
 * @module
 */
import net from 'node:net'
import { open, type FileHandle } from 'node:fs/promises'
import { tlError, isThroughlineError, type ThroughlineError } from '../../errors.ts'
import { TPM_HEADER_SIZE, TPM_MAX_COMMAND_SIZE, TPM_MAX_RESPONSE_SIZE } from './constants.ts'

/** A connection to a TPM that executes one command at a time. */
export interface TpmTransport {
  /** The endpoint string this transport talks to. */
  readonly endpoint: string
  /** Sends one command (a whole TPM command buffer) and resolves with the whole response. */
  send(command: Uint8Array, signal?: AbortSignal): Promise<Uint8Array>
  /** Waits for queued commands, then closes the connection. Later sends fail with ERR_TPM_TRANSPORT. */
  close(): Promise<void>
}

/** Options of the transports. */
export interface TpmTransportOptions {
  /** Largest response accepted, in bytes. Default 4096. */
  maxResponseSize?: number
  /** Largest command accepted, in bytes. Default 4096. */
  maxCommandSize?: number
  /** Time limit of one command, including a (re)connect, in ms. Default 30 000 (hardware key creation is slow). */
  timeoutMs?: number
}

/** A parsed endpoint. */
export type TpmEndpoint =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'device'; path: string }

/** Parses `unix:PATH`, `tcp:HOST:PORT` or `/dev/tpmrm0` (`device:PATH`). */
export function parseTpmEndpoint(endpoint: string): TpmEndpoint {
  const bad = (why: string): ThroughlineError =>
    tlError('ERR_INVALID_ARGUMENT', `TPM endpoint ${JSON.stringify(endpoint)}: ${why} (expected unix:PATH, tcp:HOST:PORT or /dev/tpmrm0)`)
  if (typeof endpoint !== 'string' || endpoint === '') throw bad('empty')
  if (endpoint.startsWith('unix:')) {
    const path = endpoint.slice(5)
    if (path === '') throw bad('no path')
    return { kind: 'unix', path }
  }
  if (endpoint.startsWith('tcp:')) {
    const rest = endpoint.slice(4)
    const colon = rest.lastIndexOf(':')
    if (colon <= 0) throw bad('no port')
    let host = rest.slice(0, colon)
    const portText = rest.slice(colon + 1)
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
    const port = Number(portText)
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) throw bad(`bad port ${JSON.stringify(portText)}`)
    if (host === '' || /[\s/]/.test(host)) throw bad('bad host')
    return { kind: 'tcp', host, port }
  }
  if (endpoint.startsWith('device:')) {
    const path = endpoint.slice(7)
    if (path === '') throw bad('no path')
    return { kind: 'device', path }
  }
  if (endpoint.startsWith('/dev/')) return { kind: 'device', path: endpoint }
  throw bad('unknown form')
}

/** Opens the transport for an endpoint string (lazily: nothing is connected until the first send). */
export function openTpmTransport(endpoint: string, options: TpmTransportOptions = {}): TpmTransport {
  const ep = parseTpmEndpoint(endpoint)
  return ep.kind === 'device' ? new DeviceTpmTransport(endpoint, ep.path, options) : new SocketTpmTransport(endpoint, ep, options)
}

/** One exchange in progress: its result, and how to stop it early. */
interface Exchange {
  result: Promise<Uint8Array>
  cancel(reason: ThroughlineError): void
}

function checkSize(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < TPM_HEADER_SIZE || value > 1 << 20) {
    throw tlError('ERR_INVALID_ARGUMENT', `${name} must be an integer in [${TPM_HEADER_SIZE}, 1 MiB]`)
  }
  return value
}

/** The FIFO queue, time limit and abort handling shared by the transports. */
abstract class QueuedTpmTransport implements TpmTransport {
  readonly endpoint: string
  protected readonly maxResponseSize: number
  protected readonly maxCommandSize: number
  protected readonly timeoutMs: number
  #tail: Promise<void> = Promise.resolve()
  #closed = false

  constructor(endpoint: string, options: TpmTransportOptions) {
    this.endpoint = endpoint
    this.maxResponseSize = checkSize('maxResponseSize', options.maxResponseSize, TPM_MAX_RESPONSE_SIZE)
    this.maxCommandSize = checkSize('maxCommandSize', options.maxCommandSize, TPM_MAX_COMMAND_SIZE)
    const t = options.timeoutMs ?? 30_000
    if (!Number.isFinite(t) || t <= 0) throw tlError('ERR_INVALID_ARGUMENT', 'timeoutMs must be a positive number')
    this.timeoutMs = t
  }

  /** Starts one exchange on the (possibly not yet open) connection. Only ever one at a time. */
  protected abstract exchange(command: Uint8Array): Exchange
  /** Releases the connection; called once, after the queue drained. */
  protected abstract release(): Promise<void>

  protected transportError(message: string, cause?: unknown, details?: Record<string, unknown>): ThroughlineError {
    return tlError('ERR_TPM_TRANSPORT', `${this.endpoint}: ${message}`, {
      ...(cause === undefined ? {} : { cause }),
      details: { endpoint: this.endpoint, ...details },
    })
  }

  send(command: Uint8Array, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(this.transportError('the transport is closed'))
    if (!(command instanceof Uint8Array) || command.length < TPM_HEADER_SIZE) {
      return Promise.reject(tlError('ERR_INVALID_ARGUMENT', 'a TPM command is at least 10 bytes'))
    }
    const declared = new DataView(command.buffer, command.byteOffset, command.byteLength).getUint32(2)
    if (declared !== command.length) {
      return Promise.reject(tlError('ERR_INVALID_ARGUMENT', `the command header says ${declared} bytes, the buffer has ${command.length}`))
    }
    if (command.length > this.maxCommandSize) {
      return Promise.reject(tlError('ERR_INVALID_ARGUMENT', `the command is ${command.length} bytes, over the limit of ${this.maxCommandSize}`))
    }
    if (signal?.aborted) return Promise.reject(tlError('ERR_ABORTED', 'TPM command aborted', { cause: signal.reason }))

    return new Promise<Uint8Array>((resolve, reject) => {
      let settled = false
      let current: Exchange | undefined
      let timer: NodeJS.Timeout | undefined
      const finish = (err: ThroughlineError | undefined, value?: Uint8Array): void => {
        if (settled) return
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        if (err !== undefined) reject(err)
        else resolve(value!)
      }
      const onAbort = (): void => {
        const err = tlError('ERR_ABORTED', 'TPM command aborted', { cause: signal?.reason })
        current?.cancel(err)
        finish(err)
      }
      signal?.addEventListener('abort', onAbort, { once: true })

      const run = async (): Promise<void> => {
        if (settled) return // aborted while queued
        current = this.exchange(command)
        timer = setTimeout(() => {
          const err = tlError('ERR_TIMEOUT', `${this.endpoint}: the TPM did not answer within ${this.timeoutMs} ms`, {
            details: { endpoint: this.endpoint },
          })
          current?.cancel(err)
          finish(err)
        }, this.timeoutMs)
        try {
          finish(undefined, await current.result)
        } catch (err) {
          finish(isThroughlineError(err) ? err : this.transportError(String(err), err))
        }
      }
      this.#tail = this.#tail.then(run, run)
    })
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#tail.catch(() => {})
    await this.release()
  }
}

/** swtpm over a unix or TCP socket, raw framing, one persistent connection. */
export class SocketTpmTransport extends QueuedTpmTransport {
  readonly #target: { path: string } | { host: string; port: number }
  #socket: net.Socket | undefined
  #connected = false
  #pending:
    | { resolve: (b: Uint8Array) => void; reject: (e: ThroughlineError) => void; chunks: Buffer[]; length: number; expected: number }
    | undefined

  constructor(endpoint: string, target: TpmEndpoint, options: TpmTransportOptions = {}) {
    super(endpoint, options)
    if (target.kind === 'device') throw tlError('ERR_INVALID_ARGUMENT', 'SocketTpmTransport needs a unix: or tcp: endpoint')
    this.#target = target.kind === 'unix' ? { path: target.path } : { host: target.host, port: target.port }
  }

  /** Fails the pending exchange (if any) and drops the connection; the next command reconnects. */
  #drop(err: ThroughlineError): void {
    const p = this.#pending
    this.#pending = undefined
    const s = this.#socket
    this.#socket = undefined
    this.#connected = false
    s?.destroy()
    p?.reject(err)
  }

  #onData(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.#socket) return
    const p = this.#pending
    if (p === undefined) {
      this.#drop(this.transportError(`${chunk.length} unsolicited bytes from the TPM`))
      return
    }
    p.chunks.push(chunk)
    p.length += chunk.length
    if (p.expected === 0 && p.length >= 6) {
      const head = p.chunks.length === 1 ? p.chunks[0]! : Buffer.concat(p.chunks)
      const size = head.readUInt32BE(2)
      if (size < TPM_HEADER_SIZE || size > this.maxResponseSize) {
        this.#drop(
          this.transportError(`the response header announces ${size} bytes, outside [${TPM_HEADER_SIZE}, ${this.maxResponseSize}]`, undefined, {
            size,
            limit: this.maxResponseSize,
          }),
        )
        return
      }
      p.expected = size
    }
    if (p.expected !== 0 && p.length >= p.expected) {
      if (p.length > p.expected) {
        this.#drop(this.transportError(`${p.length - p.expected} bytes after the end of the response`))
        return
      }
      this.#pending = undefined
      p.resolve(new Uint8Array(Buffer.concat(p.chunks, p.length)))
    }
  }

  #connect(): Promise<net.Socket> {
    if (this.#socket !== undefined && this.#connected) return Promise.resolve(this.#socket)
    return new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect(this.#target)
      this.#socket = socket
      let lastError: Error | undefined
      const onConnectError = (err: NodeJS.ErrnoException): void => {
        if (this.#socket === socket) this.#socket = undefined
        reject(this.transportError(`cannot connect: ${err.code ?? err.message}`, err, { errno: err.code }))
      }
      const onEarlyClose = (): void => {
        if (this.#socket === socket) this.#socket = undefined
        reject(this.transportError('the connection was dropped while connecting'))
      }
      socket.once('error', onConnectError)
      socket.once('close', onEarlyClose)
      socket.once('connect', () => {
        socket.off('error', onConnectError)
        socket.off('close', onEarlyClose)
        if (this.#socket !== socket) {
          socket.destroy()
          reject(this.transportError('the connection was dropped while connecting'))
          return
        }
        this.#connected = true
        socket.setNoDelay?.(true)
        socket.on('data', (chunk: Buffer) => this.#onData(socket, chunk))
        socket.on('error', (err: Error) => {
          lastError = err
        })
        socket.on('close', () => {
          if (this.#socket !== socket) return
          const code = (lastError as NodeJS.ErrnoException | undefined)?.code
          this.#drop(this.transportError(`the connection closed${code === undefined ? '' : ` (${code})`}`, lastError))
        })
        resolve(socket)
      })
    })
  }

  protected exchange(command: Uint8Array): Exchange {
    let cancelled: ThroughlineError | undefined
    const result = (async (): Promise<Uint8Array> => {
      const socket = await this.#connect()
      if (cancelled !== undefined) throw cancelled
      return new Promise<Uint8Array>((resolve, reject) => {
        this.#pending = { resolve, reject, chunks: [], length: 0, expected: 0 }
        socket.write(command)
      })
    })()
    return {
      result,
      cancel: (reason) => {
        cancelled = reason
        this.#drop(reason)
      },
    }
  }

  protected async release(): Promise<void> {
    const s = this.#socket
    this.#socket = undefined
    this.#connected = false
    if (s === undefined || s.destroyed) return
    await new Promise<void>((resolve) => {
      s.once('close', () => resolve())
      s.end()
      setTimeout(() => s.destroy(), 1000).unref()
    })
  }
}

/** A TPM character device (`/dev/tpmrm0`): write one command, read one response. Untested here. */
export class DeviceTpmTransport extends QueuedTpmTransport {
  readonly path: string
  #fh: FileHandle | undefined

  constructor(endpoint: string, path: string, options: TpmTransportOptions = {}) {
    super(endpoint, options)
    this.path = path
  }

  async #handle(): Promise<FileHandle> {
    if (this.#fh !== undefined) return this.#fh
    try {
      this.#fh = await open(this.path, 'r+')
    } catch (err) {
      throw this.transportError(`cannot open: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err)
    }
    return this.#fh
  }

  async #reset(): Promise<void> {
    const fh = this.#fh
    this.#fh = undefined
    await fh?.close().catch(() => {})
  }

  protected exchange(command: Uint8Array): Exchange {
    const result = (async (): Promise<Uint8Array> => {
      const fh = await this.#handle()
      try {
        const { bytesWritten } = await fh.write(command, 0, command.length, null)
        if (bytesWritten !== command.length) throw this.transportError(`short write: ${bytesWritten} of ${command.length} bytes`)
        const buf = new Uint8Array(this.maxResponseSize)
        const { bytesRead } = await fh.read(buf, 0, buf.length, null)
        if (bytesRead < TPM_HEADER_SIZE) throw this.transportError(`short response: ${bytesRead} bytes`)
        const size = new DataView(buf.buffer).getUint32(2)
        if (size !== bytesRead) {
          throw this.transportError(`the response header announces ${size} bytes, the device returned ${bytesRead} (limit ${this.maxResponseSize})`, undefined, {
            size,
            limit: this.maxResponseSize,
          })
        }
        return buf.slice(0, bytesRead)
      } catch (err) {
        await this.#reset()
        if (isThroughlineError(err)) throw err
        throw this.transportError(`device I/O failed: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err)
      }
    })()
    // A read on the device cannot be cancelled: the queue waits for `result` regardless.
    return { result, cancel: () => {} }
  }

  protected async release(): Promise<void> {
    await this.#reset()
  }
}
