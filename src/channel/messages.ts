/**
 * Secure channel wire messages (the router payloads exchanged by the two ends of a channel) and
 * handshake payloads. Pure encoding and decoding; every decode failure is ERR_CHANNEL_MESSAGE.
 *
 * ```
 * router payload = u8 type | body
 *   0x01 HANDSHAKE_1   body = Noise message 1 (payload: { v, versions, attest? }) — clear
 *   0x02 HANDSHAKE_2   body = Noise message 2 (payload: { v, binding, credentials, attest })
 *   0x03 HANDSHAKE_3   body = Noise message 3 (payload: same shape as 2)
 *   0x04 ABORT         body = msgpack { cause, detail? }  a handshake given up (clear: a cause code and a
 *                      short reason code such as `handle_mismatch`, never evidence or identities)
 *   0x10 TRANSPORT     body = u64be nonce | ChaChaPoly ciphertext; AD = the 9 bytes type|nonce
 *
 * transport plaintext = u8 kind | body
 *   0 DATA       body = router envelope of the inner message (onward rest, return, payload)
 *   1 CLOSE      body = msgpack { cause, detail }
 *   2 KEEPALIVE  body empty
 *   3 READY      body empty: this end accepted the peer (the responder always; the initiator
 *                only when its acceptance waits for a post-handshake attestation round)
 *   4 ATTEST_REQUEST   body = msgpack { seq, nonce, suite, logFrom }   (docs/attestation.md)
 *   5 ATTEST_EVIDENCE  body = msgpack { seq, ev? , ar? }
 *   6 ATTEST_RESULT    body = msgpack { seq, status, detail? }
 * ```
 *
 * @module
 */
import { pack, unpack } from 'msgpackr'
import { tlError } from '../errors.ts'
import type { KeyBinding } from './identity.ts'

export const MSG = { HANDSHAKE_1: 0x01, HANDSHAKE_2: 0x02, HANDSHAKE_3: 0x03, ABORT: 0x04, TRANSPORT: 0x10 } as const
export const KIND = { DATA: 0, CLOSE: 1, KEEPALIVE: 2, READY: 3, ATTEST_REQUEST: 4, ATTEST_EVIDENCE: 5, ATTEST_RESULT: 6 } as const

/** Protocol version carried in every handshake payload. */
export const CHANNEL_VERSION = 1
/** The Noise prologue: binds the protocol version into the handshake hash. */
export const PROLOGUE = new TextEncoder().encode('throughline/1')
/** Bytes before the ciphertext of a transport message. */
export const TRANSPORT_HEADER = 9

/** Why a channel closed or a handshake was given up. Stable strings, shown to users. */
export const CLOSE_CAUSE = {
  NORMAL: 'NORMAL',
  TIMEOUT: 'TIMEOUT',
  IDLE_TIMEOUT: 'IDLE_TIMEOUT',
  POLICY_DENY: 'POLICY_DENY',
  IDENTITY_INVALID: 'IDENTITY_INVALID',
  HANDSHAKE_FAILED: 'HANDSHAKE_FAILED',
  PROTOCOL_ERROR: 'PROTOCOL_ERROR',
  SHUTDOWN: 'SHUTDOWN',
  // attestation (docs/attestation.md)
  NO_ATTEST_MATCH: 'NO_ATTEST_MATCH',
  ATTEST_PROVER_FAILED: 'ATTEST_PROVER_FAILED',
  ATTEST_VERIFIER_FAILED: 'ATTEST_VERIFIER_FAILED',
  VERIFIER_UNAVAILABLE: 'VERIFIER_UNAVAILABLE',
  NO_VALID_RESULT: 'NO_VALID_RESULT',
} as const
export type CloseCause = (typeof CLOSE_CAUSE)[keyof typeof CLOSE_CAUSE] | (string & {})

/** Handshake message 1 payload (clear text: nothing identifying). */
export interface Payload1 {
  v: number
  versions: number[]
  /** Attestation requirements of the initiator (suites wanted from the responder); nothing identifying. */
  attest?: unknown
}

/** Handshake message 2/3 payload (encrypted). */
export interface IdentityPayload {
  v: number
  binding: KeyBinding
  credentials: unknown[]
  /** Attestation evidence or results (the attestation layer fills it). */
  attest: unknown
}

export function encodePayload1(attest?: unknown): Uint8Array {
  const p: Payload1 = { v: CHANNEL_VERSION, versions: [CHANNEL_VERSION] }
  if (attest !== undefined) p.attest = attest
  return pack(p)
}

export function decodePayload1(bytes: Uint8Array): Payload1 {
  const p = safeUnpack(bytes, 'handshake payload 1') as Partial<Payload1> | null
  if (p === null || typeof p !== 'object' || !Array.isArray(p.versions) || !p.versions.includes(CHANNEL_VERSION)) {
    throw tlError('ERR_CHANNEL_MESSAGE', `handshake payload 1 offers no version this node speaks (${CHANNEL_VERSION})`)
  }
  return { v: Number(p.v), versions: p.versions as number[], attest: p.attest ?? undefined }
}

export function encodeIdentityPayload(binding: KeyBinding, attest: unknown = null, credentials: unknown[] = []): Uint8Array {
  return pack({ v: CHANNEL_VERSION, binding, credentials, attest } satisfies IdentityPayload)
}

export function decodeIdentityPayload(bytes: Uint8Array, which: 2 | 3): IdentityPayload {
  const p = safeUnpack(bytes, `handshake payload ${which}`) as Partial<IdentityPayload> | null
  if (p === null || typeof p !== 'object' || p.v !== CHANNEL_VERSION || typeof p.binding !== 'object') {
    throw tlError('ERR_CHANNEL_MESSAGE', `handshake payload ${which} is malformed`)
  }
  return { v: p.v, binding: p.binding as KeyBinding, credentials: Array.isArray(p.credentials) ? p.credentials : [], attest: p.attest ?? null }
}

/** A router payload of the given type with `body` after the type byte. */
export function frame(type: number, body: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(1 + body.length)
  out[0] = type
  out.set(body, 1)
  return out
}

/** Longest detail an ABORT (clear text: a reason code) and a CLOSE (encrypted, readable) carry. */
const ABORT_DETAIL_MAX = 64
const CLOSE_DETAIL_MAX = 512

export function encodeAbort(cause: CloseCause, detail = ''): Uint8Array {
  return frame(MSG.ABORT, pack(detail === '' ? { cause } : { cause, detail: detail.slice(0, ABORT_DETAIL_MAX) }))
}

export function decodeAbort(body: Uint8Array): { cause: CloseCause; detail: string } {
  return decodeCause(body, 'abort', ABORT_DETAIL_MAX)
}

export function encodeClose(cause: CloseCause, detail: string): Uint8Array {
  return pack({ cause, detail: detail.slice(0, CLOSE_DETAIL_MAX) })
}

export function decodeClose(body: Uint8Array): { cause: CloseCause; detail: string } {
  return decodeCause(body, 'close', CLOSE_DETAIL_MAX)
}

/** `{ cause, detail }` of an ABORT or CLOSE body, each cut to its limit; a missing cause is PROTOCOL_ERROR. */
function decodeCause(body: Uint8Array, what: string, maxDetail: number): { cause: CloseCause; detail: string } {
  const p = safeUnpack(body, what) as { cause?: unknown; detail?: unknown } | null
  return {
    cause: typeof p?.cause === 'string' ? p.cause.slice(0, 64) : CLOSE_CAUSE.PROTOCOL_ERROR,
    detail: typeof p?.detail === 'string' ? p.detail.slice(0, maxDetail) : '',
  }
}

function safeUnpack(bytes: Uint8Array, what: string): unknown {
  try {
    return unpack(bytes)
  } catch (err) {
    throw tlError('ERR_CHANNEL_MESSAGE', `${what} is not valid msgpack`, { cause: err })
  }
}
