/**
 * WebSocket close codes (RFC 6455 §7.4.1) and the code each error closes a connection with;
 * shared by the Node transport (websocket.ts) and the browser one (websocket-browser.ts), so no
 * Node-only import here.
 *
 * @module
 */
import type { ThroughlineError } from '../errors.ts'

/** WebSocket close codes (RFC 6455 §7.4.1). */
export const WS_CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
} as const

/** The close code that tells the peer why we close with `error`. */
export function wsCloseCodeFor(error: ThroughlineError): number {
  switch (error.code) {
    case 'ERR_FRAME_TOO_LARGE':
      return WS_CLOSE.MESSAGE_TOO_BIG
    case 'ERR_WS_PROTOCOL':
    case 'ERR_MALFORMED_ENVELOPE':
    case 'ERR_HEADER_TOO_LARGE':
    case 'ERR_ROUTE_TOO_LONG':
    case 'ERR_ROUTE_EMPTY':
    case 'ERR_ADDRESS_SYNTAX':
    case 'ERR_UNSUPPORTED_VERSION':
      return WS_CLOSE.PROTOCOL_ERROR
    case 'ERR_IDLE_TIMEOUT':
    case 'ERR_STOPPED':
      return WS_CLOSE.GOING_AWAY
    case 'ERR_CONNECTION_REFUSED':
    case 'ERR_ACCESS_DENIED':
      return WS_CLOSE.POLICY_VIOLATION
    default:
      return WS_CLOSE.INTERNAL_ERROR
  }
}
