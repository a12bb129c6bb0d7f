/**
 * The contract between the router and a transport's byte-level links.
 *
 * A transport turns a peer address into a {@link Link}: something that sends and receives whole
 * frames (each one message envelope) and can be paused. The shared {@link Connection} turns a
 * link into a router connection (a sink worker with a local address, flow control, heartbeats,
 * idle timeout), and {@link BaseTransport} adds the connection registry, dial de-duplication
 * and reconnects. TCP, WebSocket, serial and memory transports only implement links.
 *
 * @module
 */
import type { ThroughlineError } from '../errors.ts'

/** A frame-level duplex to one peer. */
export interface Link {
  /** Human description of the peer (`127.0.0.1:53311`). */
  readonly remote: string
  /**
   * Writes one frame: the envelope `head` (version, header length, header) followed by
   * `payload`. The link must not modify either, and may hold on to both until they are written
   * (callers never change them afterwards: heads are often shared, cached encodings). Returns
   * false when the link's buffer is full: wait for `onDrain`.
   */
  writeFrame(head: Buffer, payload: Uint8Array): boolean
  /**
   * Optional: as `writeFrame`, with the payload `buf[start, end)` (a range of a received frame,
   * so that a forwarding node need not make a view of it).
   */
  writeFrameRange?(head: Buffer, buf: Uint8Array, start: number, end: number): boolean
  /**
   * Optional: as `writeFrame`, with the payload `pieces[0][start…]` then the other pieces whole
   * (`length` bytes in all): a frame forwarded without gathering its pieces.
   */
  writeFramePieces?(head: Buffer, pieces: readonly Uint8Array[], start: number, length: number): boolean
  /** Writes an empty (heartbeat) frame. */
  writeHeartbeat(): void
  /** Optional: lets go of memory kept for writing; called when nothing was sent for a while. */
  trim?(): void
  /** Stops / restarts delivery of received frames (counted by the Connection, not here). */
  pause(): void
  resume(): void
  /** Closes the link; `onClose` follows once. */
  close(error?: ThroughlineError): void
  /**
   * Optional, set by the Connection (links that receive frames in pieces, as TCP): may take a
   * frame that arrived in several pieces without their being gathered; returns false when it
   * does not, and the link then passes the frame to `onFrame` as one buffer.
   */
  onFramePieces?: ((pieces: readonly Uint8Array[], length: number) => boolean) | undefined
  /**
   * Set by the Connection: a received frame (empty = heartbeat). The frame is `buf[start, end)`
   * when `start` and `end` are given (a range of a received chunk, so that no view need be made
   * for it), else the whole of `buf`; either way it may share memory with a received chunk.
   */
  onFrame: (buf: Uint8Array, start?: number, end?: number) => void
  /** Set by the Connection: the link closed (with the error that closed it, if any). */
  onClose: (error?: ThroughlineError) => void
  /** Set by the Connection: the link can take writes again. */
  onDrain: () => void
}

/** Options common to every transport. */
export interface TransportOptions {
  /** Largest frame (message envelope) in bytes. Default 1 MiB. */
  maxFrameSize?: number
  /** Send a heartbeat when nothing was sent for this long (ms); 0 disables. Default 10 s. */
  heartbeatInterval?: number
  /** Close a connection on which nothing arrived for this long (ms); 0 disables. Default 35 s. */
  idleTimeout?: number
  /** Dial timeout (ms). Default 10 s. */
  connectTimeout?: number
  /** Re-dial backoff of persistent connections (ms). */
  reconnectInitialDelay?: number
  reconnectMaxDelay?: number
  /** Messages queued while a connection is being dialled. */
  maxPendingMessages?: number
  /** Inbound connections a listener keeps. */
  maxInboundConnections?: number
}

/** Options of `listen()`. */
export interface ListenOptions {
  /**
   * Local addresses that messages arriving on this listener's connections may reach
   * (names, `0#name`, or prefixes ending in `*`). Default: none (deny all).
   */
  allow?: Iterable<string>
  /** May messages from this listener be routed on through the node's other connections (relay)? */
  transit?: boolean
  signal?: AbortSignal
}

/** Options of `connect()`. */
export interface ConnectOptions {
  /** Local addresses that messages arriving on this connection may reach. Default: none. */
  allow?: Iterable<string>
  /** Keep the connection: re-dial with exponential backoff whenever it is lost. */
  persistent?: boolean
  /**
   * May messages arriving on this connection be routed on through the node's other existing
   * connections? Needed for the replies of transit traffic sent out on it. Default false.
   */
  transit?: boolean
  signal?: AbortSignal
}
