/**
 * A sliding anti-replay window for explicit transport nonces (DESIGN §5): messages may arrive
 * lost or out of order across hops, and each counter is accepted at most once.
 *
 * The design is RFC 6479's (as in wireguard-go `replay/replay.go`): a ring of 64-bit blocks of
 * "seen" bits, advanced a block at a time as higher counters arrive, so the cost does not depend
 * on the window width. Two steps, so that only authentic messages move the window:
 * - {@link ReplayWindow.check} says whether a counter would be accepted (no change);
 * - {@link ReplayWindow.commit} marks it seen — call it only after the message decrypted.
 *
 * Acceptance rule, with `max` the highest committed counter: a counter `c` is accepted when it
 * is below the reject limit (2^64-1, the nonce Noise reserves), was not committed before, and
 * `c > max - width` (so exactly `width` counters, `max` included, are tracked below the top).
 *
 * @module
 */
import { ThroughlineError } from '../errors.ts'
import { NOISE_MAX_NONCE, REPLAY_WINDOW } from './constants.ts'

const BLOCK_BITS = 64n

/** Options of {@link ReplayWindow}. */
export interface ReplayWindowOptions {
  /** How many counters below the highest one (itself included) are tracked. Default REPLAY_WINDOW. */
  width?: number
  /** Counters at or above this are always rejected. Default 2^64-1. */
  rejectAfter?: bigint
}

/** The sliding window of one receiving CipherState. */
export class ReplayWindow {
  /** The width: see the acceptance rule in the module docs. */
  readonly width: number
  readonly #widthBig: bigint
  readonly #limit: bigint
  /** Ring of blocks; a block holds 64 bits as two 32-bit words (lo word first). */
  readonly #ring: Uint32Array
  readonly #blocks: bigint
  /** Highest committed counter, or -1 while nothing was committed. */
  #max = -1n

  constructor(options: ReplayWindowOptions = {}) {
    const width = options.width ?? REPLAY_WINDOW
    const limit = options.rejectAfter ?? NOISE_MAX_NONCE
    if (!Number.isSafeInteger(width) || width < 1 || width > 2 ** 24) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'a replay window width must be an integer in 1..2^24')
    }
    if (typeof limit !== 'bigint' || limit < 1n || limit > NOISE_MAX_NONCE) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'rejectAfter must be a bigint in 1..2^64-1')
    }
    this.width = width
    this.#widthBig = BigInt(width)
    this.#limit = limit
    // ceil(width / 64) blocks cover the window below the current block, plus the current block.
    const blocks = Math.ceil(width / 64) + 1
    this.#blocks = BigInt(blocks)
    this.#ring = new Uint32Array(blocks * 2)
  }

  /** The highest committed counter, or -1n when none. */
  get highest(): bigint {
    return this.#max
  }

  /** Would `counter` be accepted now? Never changes the window. */
  check(counter: bigint): boolean {
    if (typeof counter !== 'bigint' || counter < 0n || counter >= this.#limit) return false
    if (counter > this.#max) return true
    if (this.#max - counter >= this.#widthBig) return false // older than the window
    return !this.#isSet(counter)
  }

  /**
   * Mark `counter` as seen (after its message authenticated). Throws ERR_REPLAY when
   * {@link ReplayWindow.check} would refuse it, e.g. the same counter committed twice.
   */
  commit(counter: bigint): void {
    if (!this.check(counter)) {
      throw new ThroughlineError('ERR_REPLAY', `counter ${counter} is a replay, too old, or at the reject limit`)
    }
    if (counter > this.#max) {
      // Advance: clear the blocks between the old top block and the new one (all of them at most).
      const newBlock = counter / BLOCK_BITS
      const oldBlock = this.#max < 0n ? -1n : this.#max / BLOCK_BITS
      let diff = newBlock - oldBlock
      if (diff > this.#blocks) diff = this.#blocks
      for (let i = 1n; i <= diff; i++) {
        const slot = Number((oldBlock + i) % this.#blocks) * 2
        this.#ring[slot] = 0
        this.#ring[slot + 1] = 0
      }
      this.#max = counter
    }
    const [index, bit] = this.#position(counter)
    this.#ring[index] = this.#ring[index]! | bit // stored modulo 2^32
  }

  /** Forget everything (e.g. after a rekey that restarts counters). */
  reset(): void {
    this.#ring.fill(0)
    this.#max = -1n
  }

  #isSet(counter: bigint): boolean {
    const [index, bit] = this.#position(counter)
    return (this.#ring[index]! & bit) !== 0
  }

  /** Word index in the ring and bit mask of `counter`. */
  #position(counter: bigint): [number, number] {
    const slot = Number((counter / BLOCK_BITS) % this.#blocks) * 2
    const bitInBlock = Number(counter % BLOCK_BITS)
    return [slot + (bitInBlock >>> 5), 1 << (bitInBlock & 31)]
  }
}
