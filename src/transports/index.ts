/**
 * Transports: TCP, in-memory, and the pieces they share.
 *
 * @module
 */
export * from './types.ts'
export * from './constants.ts'
export { BaseTransport, type Listener, resolveOptions } from './base.ts'
export { Connection, type ConnectionEvent, type ConnectionOptions } from './connection.ts'
export { FrameDecoder } from './frame-decoder.ts'
export { TcpTransport, TcpLink, type TcpListener } from './tcp.ts'
export { MemoryTransport, MemoryLink, MemoryNetwork, defaultMemoryNetwork } from './memory.ts'
