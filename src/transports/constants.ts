/**
 * Transport defaults and limits. Wire constants apart from tunables.
 *
 * @module
 */

// ---- wire format ----

/** The byte each side sends first on a stream connection (TCP). */
export const CONNECTION_VERSION = 1
/** Bytes of the TCP frame length prefix (u32 big-endian). */
export const TCP_LENGTH_PREFIX = 4

// ---- tunables (TransportOptions) ----

/** Largest frame accepted or sent, in bytes. Checked before a frame's buffer is allocated. */
export const DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
/** A heartbeat frame is sent when nothing else was sent for this long (ms). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000
/** A connection on which nothing arrived for this long (ms) is closed with ERR_IDLE_TIMEOUT. */
export const DEFAULT_IDLE_TIMEOUT_MS = 35_000
/** A dial that has not connected within this time (ms) fails with ERR_TIMEOUT. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
/** First delay before re-dialling a lost persistent connection (ms); doubles up to the maximum. */
export const DEFAULT_RECONNECT_INITIAL_MS = 100
/** Longest delay between re-dial attempts (ms). */
export const DEFAULT_RECONNECT_MAX_MS = 2_000
/** Messages held for a connection that is still being dialled; more are dropped (`queue-full`). */
export const DEFAULT_MAX_PENDING_MESSAGES = 4096
/** Most inbound connections one listener keeps open; more are refused at accept. */
export const DEFAULT_MAX_INBOUND_CONNECTIONS = 4096

// ---- TCP write batching ----

/**
 * Payloads up to this many bytes are copied into a TCP connection's per-turn write batch (one
 * socket write per turn); larger ones are written as they are. Copying 256 bytes costs a few tens
 * of nanoseconds; a socket write of its own costs about 150 ns more per frame (perf.md §6).
 */
export const DEFAULT_TCP_COALESCE_MAX_PAYLOAD = 256
/**
 * Largest TCP write batch buffer. A connection begins with {@link TCP_BATCH_MIN_BYTES} and doubles
 * each time one fills, up to this (a frame head larger than this gets a buffer of its own size);
 * a connection that sent nothing for a heartbeat tick lets go of its buffer.
 */
export const TCP_BATCH_BYTES = 64 * 1024
/** First (and after a quiet spell, again the first) TCP write batch buffer. */
export const TCP_BATCH_MIN_BYTES = 4 * 1024
/** A batch holding this many unwritten bytes is written at once, so the socket's backpressure counts it. */
export const TCP_BATCH_FLUSH_BYTES = 16 * 1024
