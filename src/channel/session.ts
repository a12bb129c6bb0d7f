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
  #nextNonce = 0n
  #recv: CipherState
  #recvPrev: CipherState | undefined
  #recvEpoch = 0n
  #window: ReplayWindow

  constructor(send: CipherState, receive: CipherState, options: SessionOptions = {}) {
    const interval = options.rekeyInterval ?? DEFAULT_REKEY_INTERVAL
    if (!Number.isSafeInteger(interval) || interval < 1) throw tlError('ERR_INVALID_ARGUMENT', 'rekeyInterval must be a positive integer')
    this.rekeyInterval = BigInt(interval)
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
    const n = this.#nextNonce++
    const epoch = n / this.rekeyInterval
    while (this.#sendEpoch < epoch) {
      this.#send.rekey()
      this.#sendEpoch++
    }
    const header = Buffer.allocUnsafe(TRANSPORT_HEADER)
    header[0] = MSG.TRANSPORT
    header.writeBigUInt64BE(n, 1)
    const ct = this.#send.encryptWithNonce(n, plaintext, header)
    const out = Buffer.allocUnsafe(TRANSPORT_HEADER + ct.length)
    header.copy(out, 0)
    out.set(ct, TRANSPORT_HEADER)
    return out
  }

  /**
   * Opens a transport message. Throws ERR_CHANNEL_MESSAGE (malformed), ERR_REPLAY (seen, or too
   * old), or ERR_DECRYPT (forged); in every such case the session is unchanged.
   */
  open(message: Uint8Array): Uint8Array {
    if (message.length < TRANSPORT_HEADER + 16 || message[0] !== MSG.TRANSPORT) {
      throw tlError('ERR_CHANNEL_MESSAGE', `transport message of ${message.length} bytes is malformed`)
    }
    const header = message.subarray(0, TRANSPORT_HEADER)
    const n = Buffer.from(header.buffer, header.byteOffset, TRANSPORT_HEADER).readBigUInt64BE(1)
    if (!this.#window.check(n)) throw tlError('ERR_REPLAY', `transport message ${n} was seen before or is older than the replay window`)
    const epoch = n / this.rekeyInterval
    let key: CipherState
    let advanced: CipherState[] | undefined
    if (epoch === this.#recvEpoch) key = this.#recv
    else if (epoch + 1n === this.#recvEpoch && this.#recvPrev !== undefined) key = this.#recvPrev
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
    const plaintext = key.decryptWithNonce(n, message.subarray(TRANSPORT_HEADER), header)
    // authentic: commit
    this.#window.commit(n)
    if (advanced !== undefined) {
      this.#recvPrev = advanced.length >= 2 ? advanced[advanced.length - 2] : this.#recv
      this.#recv = advanced[advanced.length - 1]!
      this.#recvEpoch = epoch
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
