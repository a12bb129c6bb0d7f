/**
 * Messages: onward route, return route, payload, and node-local metadata that never goes on the wire.
 *
 * @module
 */
import type { Address } from './address.ts'
import type { FlowControl } from './access.ts'

/** Something that produced a message from outside the node and can be paused (a transport connection). */
export interface Producer {
  /** Stops reading until `resume()`. */
  pause(): void
  resume(): void
}

/** Peer facts that an authenticated layer (a secure channel) attaches to the messages it delivers. */
export interface PeerInfo {
  /** The peer's identifier (printable hash of its identity key). */
  identifier: string
  /** Attributes from credentials or attestation results. */
  attributes?: Readonly<Record<string, unknown>>
}

/**
 * Node-local metadata of a message. Never encoded: it tells local workers and access control where
 * a message came from.
 */
export interface LocalInfo {
  /** Set on messages that entered from the network: what they may reach (deny by default). */
  flow?: FlowControl | undefined
  /** Who to pause when a destination is full (the connection the bytes came from). */
  producer?: Producer | undefined
  /** The local address of the transport connection the message arrived on. */
  connection?: Address | undefined
  /** The local address of the secure channel that decrypted the message. */
  channel?: Address | undefined
  /** The authenticated peer, once a secure channel has checked it. */
  peer?: PeerInfo | undefined
}

/** A routed message. Routes are never mutated in place; hops build new arrays. */
export interface Message {
  onward: readonly Address[]
  return: readonly Address[]
  payload: Uint8Array
  local: LocalInfo
}
