/**
 * The TCP stream decoder: an explicit state machine over received chunks.
 *
 * ```
 * stream  = version:u8  frame*
 * frame   = length:u32be  envelope[length]     (length 0 = heartbeat)
 * ```
 *
 * States: VERSION → LENGTH → BODY → LENGTH → … The length is checked against the limit before any
 * buffer is allocated for the body. A frame that lies inside one chunk is passed on as a view
 * (no copy); a frame that straddles chunks is gathered into one buffer once it is complete (the
 * pieces are kept in a list until then, never concatenated piecemeal).
 *
 * @module
 */
import { tlError } from '../errors.ts'
import { CONNECTION_VERSION, TCP_LENGTH_PREFIX } from './constants.ts'

const VERSION = 0
const LENGTH = 1
const BODY = 2

const EMPTY = Buffer.alloc(0)

/** Takes one frame: `buf[start, end)`. */
export type FrameCallback = (buf: Buffer, start: number, end: number) => void
/** May take one frame of `length` bytes as the pieces it arrived in (true: taken; false: gather it). */
export type PiecesCallback = (pieces: readonly Buffer[], length: number) => boolean

export class FrameDecoder {
  readonly maxFrameSize: number
  #state: number
  #length = 0
  #parts: Buffer[] = []
  #partBytes = 0

  /** @param expectVersion start by reading the connection version byte (default true) */
  constructor(maxFrameSize: number, expectVersion = true) {
    this.maxFrameSize = maxFrameSize
    this.#state = expectVersion ? VERSION : LENGTH
  }

  /** Bytes held of an incomplete frame or length. */
  get buffered(): number {
    return this.#partBytes
  }

  /**
   * Feeds a chunk; calls `onFrame(buf, start, end)` for every complete frame `buf[start, end)`
   * (empty for heartbeats), in order: a frame inside the chunk is passed as its range of the
   * chunk (no view is made), one that straddled chunks as a buffer of its own — unless
   * `onPieces` is given and takes the frame as its pieces (returns true): a forwarding node then
   * writes them on without gathering them.
   * Throws ERR_UNSUPPORTED_VERSION or ERR_FRAME_TOO_LARGE; the decoder is then unusable.
   */
  push(chunk: Buffer, onFrame: FrameCallback, onPieces?: PiecesCallback): void {
    const n = chunk.length
    let off = 0
    while (off < n) {
      if (this.#state === VERSION) {
        const v = chunk[off++]!
        if (v !== CONNECTION_VERSION) {
          throw tlError('ERR_UNSUPPORTED_VERSION', `connection version ${v} (this node speaks ${CONNECTION_VERSION})`)
        }
        this.#state = LENGTH
        continue
      }
      const need = this.#state === LENGTH ? TCP_LENGTH_PREFIX : this.#length
      if (this.#partBytes === 0 && n - off >= need) {
        // fast path: the whole item is in this chunk
        if (this.#state === LENGTH) {
          this.#onLength(chunk[off]! * 0x1000000 + ((chunk[off + 1]! << 16) | (chunk[off + 2]! << 8) | chunk[off + 3]!), onFrame)
        } else {
          onFrame(chunk, off, off + need)
          this.#state = LENGTH
        }
        off += need
        continue
      }
      const take = Math.min(need - this.#partBytes, n - off)
      this.#parts.push(chunk.subarray(off, off + take))
      this.#partBytes += take
      off += take
      if (this.#partBytes < need) break
      const parts = this.#parts
      this.#parts = []
      this.#partBytes = 0
      if (this.#state === BODY && parts.length > 1 && onPieces !== undefined && onPieces(parts, need)) {
        this.#state = LENGTH
        continue
      }
      const whole = parts.length === 1 ? parts[0]! : Buffer.concat(parts, need)
      if (this.#state === LENGTH) {
        this.#onLength(whole.readUInt32BE(0), onFrame)
      } else {
        onFrame(whole, 0, whole.length)
        this.#state = LENGTH
      }
    }
  }

  #onLength(length: number, onFrame: FrameCallback): void {
    if (length > this.maxFrameSize) {
      throw tlError('ERR_FRAME_TOO_LARGE', `frame of ${length} bytes announced (limit ${this.maxFrameSize})`)
    }
    if (length === 0) {
      onFrame(EMPTY, 0, 0)
      return
    }
    this.#length = length
    this.#state = BODY
  }
}
