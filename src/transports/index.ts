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
export { TcpTransport, TcpLink, type TcpListener, type TcpTransportOptions } from './tcp.ts'
export { MemoryTransport, MemoryLink, MemoryNetwork, defaultMemoryNetwork } from './memory.ts'
export { WebSocketTransport, WebSocketLink, type WebSocketListener, type WebSocketListenOptions, type WebSocketTransportOptions, type WebSocketServerTls, type WebSocketClientTls, WS_HIGH_WATER_MARK, WS_COALESCE_MAX, WS_CLOSE, WS_CLOSE_TIMEOUT_MS, wsUrl } from './websocket.ts'
export { BrowserWebSocketTransport, BrowserWebSocketLink, type BrowserWebSocket, type BrowserWebSocketConstructor, type BrowserWebSocketTransportOptions, type BrowserMessageEvent, type BrowserCloseEvent } from './websocket-browser.ts'
export { SerialTransport, SerialLink, openSerialPort, DEFAULT_SERIAL_BAUD_RATE, type SerialTransportOptions, type SerialListenOptions, type SerialListener, type SerialPortOpener } from './serial.ts'
export * from './serial-framing.ts'
export { cobsEncode, cobsDecode, cobsMaxEncodedLength, CobsEncoder } from './cobs.ts'
export { crc32c } from './crc32c.ts'
