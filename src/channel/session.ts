/**
 * The transport phase of a secure channel: explicit nonces, a sliding replay window, and Noise
 * Rekey every N messages with the previous key kept for stragglers. Pure: no I/O, no timers.
 *
 * Nonces count messages from 0 in each direction; message `n` is sealed with the key of epoch
 * `floor(n / N)`, where epoch 0 is the key from Split() and epoch e+1 = Rekey(epoch e). So both
 * sides rekey at the same point whatever arrives late, lost or out of order.
 *
 * Receiving is failure-atomic (as wireguard-go's replay filter and Ockam's decryptor): the window
 * is checked first, the key of the message's epoch is found (the current one, the previous one,
 * or a tentatively derived later one), the ciphertext is opened, and only then are the window and
 * the epoch committed. A forged or replayed message changes nothing.
 *
 * Copies (performance): a transport message is `header | ciphertext | tag` in one buffer. When
 * the crypto backend leaves spare bytes before its sealed output (the `node` backend does, and
 * marks it with the {@link SEAL_HEADROOM} symbol), the header is written there and the message is
 * a view of that buffer: no copy of the ciphertext. {@link Session.sealParts} seals `head || body`
 * through one reusable scratch buffer (wiped after each use) instead of a fresh concatenation.
 *
 * @module
 */
import { tlError } from '../errors.ts'
import type { CipherState } from './cipher-state.ts'
import { DEFAULT_REKEY_INTERVAL, REPLAY_WINDOW } from './constants.ts'
import { MSG, TRANSPORT_HEADER } from './messages.ts'
import { ReplayWindow } from './replay-window.ts'

/** Later epochs a receiver will derive to catch up after losses. */
export const MAX_EPOCH_SKIP = 4
/**
 * Largest transport message. Transport messages carry explicit nonces and are framed by the
 * router, so they may exceed Noise's 65535-byte stream limit; the router's frame limit (1 MiB by
 * default) bounds them in practice.
 */
export const MAX_TRANSPORT_MESSAGE = 16 * 1024 * 1024

/**
 * A property a crypto backend may set on the array its AEAD seal returns: how many bytes before
 * `byteOffset` in the same ArrayBuffer belong to that output and are unused (free for a header).
 * A registered symbol, so backends need not import this module.
 */
export const SEAL_HEADROOM: unique symbol = Symbol.for('throughline.aead.headroom')

/** Plaintexts up to this size are assembled in the shared scratch buffer; larger ones get their own. */
const SCRATCH_MAX = 1024 * 1024
/** The scratch buffer of {@link Session.sealParts} (one per process: sealing is synchronous). */
let scratch = Buffer.allocUnsafeSlow(0)

function scratchFor(length: number): Buffer {
  if (length > SCRATCH_MAX) return Buffer.allocUnsafeSlow(length)
  if (scratch.length < length) {
    let size = Math.max(4096, scratch.length)
    while (size < length) size *= 2
    scratch = Buffer.allocUnsafeSlow(Math.min(size, SCRATCH_MAX))
  }
  return scratch
}

const TWO_32 = 0x100000000n

export interface SessionOptions {
  /** Messages per key (per direction). Default 2^16. */
  rekeyInterval?: number
  /** Replay window width. Default {@link REPLAY_WINDOW}. */
  replayWindow?: number
}

export class Session {
  readonly rekeyInterval: bigint
  #send: CipherState
  #sendEpoch = 0n
  /** First nonce of the next send epoch: reaching it means rekey. */
  #sendEpochEnd: bigint
  #nextNonce = 0n
  /** The AD (= header) of the message being sealed; reused, it is consumed synchronously. */
  readonly #ad = Buffer.alloc(TRANSPORT_HEADER)
  #recv: CipherState
  #recvPrev: CipherState | undefined
  #recvEpoch = 0n
  /** Nonces of the current receive epoch: [#recvStart, #recvEnd). */
  #recvStart = 0n
  #recvEnd: bigint
  #window: ReplayWindow

  constructor(send: CipherState, receive: CipherState, options: SessionOptions = {}) {
    const interval = options.rekeyInterval ?? DEFAULT_REKEY_INTERVAL
    if (!Number.isSafeInteger(interval) || interval < 1) throw tlError('ERR_INVALID_ARGUMENT', 'rekeyInterval must be a positive integer')
    this.rekeyInterval = BigInt(interval)
    this.#sendEpochEnd = this.rekeyInterval
    this.#recvEnd = this.rekeyInterval
    send.setMaxMessageLength(MAX_TRANSPORT_MESSAGE)
    receive.setMaxMessageLength(MAX_TRANSPORT_MESSAGE)
    this.#send = send
    this.#recv = receive
    this.#window = new ReplayWindow({ width: options.replayWindow ?? REPLAY_WINDOW })
  }

  /** Messages sealed so far. */
  get sent(): bigint {
    return this.#nextNonce
  }

  /** Seals one plaintext into a transport message `0x10 | u64 nonce | ciphertext`. */
  seal(plaintext: Uint8Array): Uint8Array {
    // the nonce is taken (and never given back) before anything can fail
    const n = this.#nextNonce++
    while (n >= this.#sendEpochEnd) {
      this.#send.rekey()
      this.#sendEpoch++
      this.#sendEpochEnd += this.rekeyInterval
    }
    const ad = this.#ad
    ad[0] = MSG.TRANSPORT
    ad.writeBigUInt64BE(n, 1)
    const ct = this.#send.encryptWithNonce(n, plaintext, ad)
    const room = (ct as { [SEAL_HEADROOM]?: number })[SEAL_HEADROOM]
    if (room !== undefined && room >= TRANSPORT_HEADER) {
      // the backend left spare bytes before the ciphertext: the header goes there, no copy
      const out = Buffer.from(ct.buffer, ct.byteOffset - TRANSPORT_HEADER, TRANSPORT_HEADER + ct.length)
      for (let i = 0; i < TRANSPORT_HEADER; i++) out[i] = ad[i]!
      return out
    }
    const out = Buffer.allocUnsafe(TRANSPORT_HEADER + ct.length)
    ad.copy(out, 0)
    out.set(ct, TRANSPORT_HEADER)
    return out
  }

  /**
   * As `seal(concat(head, body))`, without building the concatenation: it is assembled in a
   * reusable scratch buffer, which is wiped once sealed.
   */
  sealParts(head: Uint8Array, body: Uint8Array): Uint8Array {
    const length = head.length + body.length
    const buf = scratchFor(length)
    const plain = buf.length === length ? buf : buf.subarray(0, length)
    plain.set(head, 0)
    plain.set(body, head.length)
    try {
      return this.seal(plain)
    } finally {
      plain.fill(0)
    }
  }

  /**
   * Opens a transport message. Throws ERR_CHANNEL_MESSAGE (malformed), ERR_REPLAY (seen, or too
   * old), or ERR_DECRYPT (forged); in every such case the session is unchanged.
   */
  open(message: Uint8Array): Uint8Array {
    if (message.length < TRANSPORT_HEADER + 16 || message[0] !== MSG.TRANSPORT) {
      throw tlError('ERR_CHANNEL_MESSAGE', `transport message of ${message.length} bytes is malformed`)
    }
    const hi = ((message[1]! << 24) | (message[2]! << 16) | (message[3]! << 8) | message[4]!) >>> 0
    const lo = ((message[5]! << 24) | (message[6]! << 16) | (message[7]! << 8) | message[8]!) >>> 0
    const n = hi === 0 ? BigInt(lo) : BigInt(hi) * TWO_32 + BigInt(lo)
    if (!this.#window.check(n)) throw tlError('ERR_REPLAY', `transport message ${n} was seen before or is older than the replay window`)
    let key: CipherState
    let epoch = this.#recvEpoch
    let advanced: CipherState[] | undefined
    if (n >= this.#recvStart && n < this.#recvEnd) key = this.#recv
    else {
      epoch = n / this.rekeyInterval
      if (epoch + 1n === this.#recvEpoch && this.#recvPrev !== undefined) key = this.#recvPrev
      else if (epoch > this.#recvEpoch && epoch - this.#recvEpoch <= BigInt(MAX_EPOCH_SKIP)) {
        advanced = []
        let k = this.#recv
        for (let e = this.#recvEpoch; e < epoch; e++) {
          k = k.clone()
          k.rekey()
          advanced.push(k)
        }
        key = k
      } else {
        throw tlError('ERR_REPLAY', `transport message ${n} is from key epoch ${epoch}, outside the keys kept (${this.#recvEpoch} and the one before)`)
      }
    }
    const plaintext = key.decryptWithNonce(n, message.subarray(TRANSPORT_HEADER), message.subarray(0, TRANSPORT_HEADER))
    // authentic: commit
    this.#window.commit(n)
    if (advanced !== undefined) {
      this.#recvPrev = advanced.length >= 2 ? advanced[advanced.length - 2] : this.#recv
      this.#recv = advanced[advanced.length - 1]!
      this.#recvEpoch = epoch
      this.#recvStart = epoch * this.rekeyInterval
      this.#recvEnd = this.#recvStart + this.rekeyInterval
    }
    return plaintext
  }

  /** Wipes the keys. */
  destroy(): void {
    this.#send.destroy()
    this.#recv.destroy()
    this.#recvPrev?.destroy()
  }
}
