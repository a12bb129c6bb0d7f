/**
 * The handle rule: the one way the 32 bytes that evidence is bound to are derived.
 *
 * ```
 * handle = SHA-256( "throughline/attest/v1" ‖ 0x00 ‖ role ‖ LV(suite) ‖ LV(hPoint) ‖ LV(attesterStaticPub) ‖ LV(vnonce) )
 *   role     'R' (0x52) responder evidence | 'I' (0x49) initiator evidence
 *   hPoint   h2* (responder, handshake message 2) | h3* (initiator, message 3): the Noise
 *            handshake hash just before that payload is encrypted;
 *            in-channel rounds: HKDF-SHA256(ikm = h_final, salt = nonce, info = "reattest" ‖ role ‖ u64be(seq), 32)
 *   LV(x)    u16 big-endian length ‖ x   (so no two inputs concatenate to the same bytes)
 *   vnonce   an external verifier's nonce, or empty
 * ```
 *
 * Replay: a new session has new ephemerals, so a new h, so a new handle. Relay into another
 * channel: that channel's h differs. Key substitution: the static key is inside the handle and
 * Noise proves possession of it.
 *
 * Attesters never sign caller-chosen bytes: they take an {@link AttestationContext}, which only
 * {@link mintContext} makes, and the secure channel calls it only with its own live handshake
 * state. An attester refuses any context it did not get from here ({@link assertMinted}).
 *
 * @module
 */
import { createHash, hkdfSync } from 'node:crypto'
import { tlError } from '../errors.ts'
import type { AttestationContext } from './types.ts'

const LABEL = Buffer.from('throughline/attest/v1\u0000', 'latin1')
const REATTEST = Buffer.from('reattest', 'latin1')

function lv(h: ReturnType<typeof createHash>, bytes: Uint8Array): void {
  if (bytes.length > 0xffff) throw tlError('ERR_INVALID_ARGUMENT', 'handle input over 65535 bytes')
  const len = Buffer.allocUnsafe(2)
  len.writeUInt16BE(bytes.length, 0)
  h.update(len)
  h.update(bytes)
}

/** The handle (32 bytes) for these inputs. Pure; used by attesters (through contexts) and verifiers. */
export function deriveHandle(role: 'R' | 'I', suite: string, hPoint: Uint8Array, attesterStaticPub: Uint8Array, vnonce: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (role !== 'R' && role !== 'I') throw tlError('ERR_INVALID_ARGUMENT', `role must be 'R' or 'I', not ${String(role)}`)
  const h = createHash('sha256')
  h.update(LABEL)
  h.update(Buffer.from(role, 'latin1'))
  lv(h, Buffer.from(suite, 'utf8'))
  lv(h, hPoint)
  lv(h, attesterStaticPub)
  lv(h, vnonce)
  return new Uint8Array(h.digest())
}

/** hPoint of an in-channel round `seq` with the requester's `nonce`, from the final handshake hash. */
export function roundHashPoint(handshakeHash: Uint8Array, nonce: Uint8Array, role: 'R' | 'I', seq: number): Uint8Array {
  const info = Buffer.alloc(REATTEST.length + 1 + 8)
  REATTEST.copy(info, 0)
  info.write(role, REATTEST.length, 'latin1')
  info.writeBigUInt64BE(BigInt(seq), REATTEST.length + 1)
  return new Uint8Array(hkdfSync('sha256', handshakeHash, nonce, info, 32))
}

const minted = new WeakSet<AttestationContext>()

/**
 * @internal For the secure channel only: a context for evidence over the channel's own live
 * handshake state (`hPoint` read from its Noise engine, `staticPub` its own static key).
 */
export function mintContext(role: 'R' | 'I', suite: 'tpm2' | 'sim', hPoint: Uint8Array, staticPub: Uint8Array, logFrom = 0, vnonce?: Uint8Array): AttestationContext {
  const ctx: AttestationContext = Object.freeze({ role, suite, handle: deriveHandle(role, suite, hPoint, staticPub, vnonce), logFrom })
  minted.add(ctx)
  return ctx
}

/** Throws unless `ctx` came from {@link mintContext}: attesters sign nothing else. */
export function assertMinted(ctx: AttestationContext): void {
  if (!minted.has(ctx)) throw tlError('ERR_INVALID_ARGUMENT', 'attesters only sign handles a secure channel derived from its own handshake (no caller-supplied handles)')
}
