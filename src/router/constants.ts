/**
 * Router defaults and limits. Wire-format constants (part of the protocol) are kept apart from
 * tunables (which a node may change through its options).
 *
 * @module
 */

// ---- wire format (changing these changes the protocol) ----

/** Version byte that starts every message envelope. */
export const ENVELOPE_VERSION = 1

/** Address types (the u8 of an address). */
export const ADDRESS_TYPE = {
  LOCAL: 0,
  TCP: 1,
  WS: 2,
  SERIAL: 3,
  MEMORY: 4,
} as const

// ---- limits (tunable through NodeOptions.limits) ----

/** Most hops an onward or return route may have. A longer route is refused before it is routed. */
export const DEFAULT_MAX_ROUTE_LENGTH = 64
/** Largest encoded envelope header, in bytes; checked before the header is decoded. */
export const DEFAULT_MAX_HEADER_SIZE = 16 * 1024
/** Longest address value, in bytes (UTF-8). */
export const MAX_ADDRESS_VALUE_LENGTH = 255
/** Messages a worker's mailbox holds before its producers are paused. */
export const DEFAULT_MAILBOX_CAPACITY = 1024
/** Default timeout of `node.request()`, in milliseconds. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000
/** How long `node.stop()` waits for a worker's pending handler before it moves on, in ms. */
export const DEFAULT_STOP_GRACE_MS = 2_000
/** Nested synchronous deliveries allowed before a message is queued instead (stack guard). */
export const MAX_INLINE_DEPTH = 16

