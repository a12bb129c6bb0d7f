/**
 * Message framing over a noisy byte stream without boundaries (a serial line): pure, with no
 * I/O, usable over any byte duplex.
 *
 * ```
 * stream      = (0x00 (frame 0x00)+)*              (a message: its frames after one extra 0x00)
 * frame       = COBS(raw)                          (no 0x00 inside; 0x00 is the delimiter)
 * raw         = header  fragment  crc
 * header      = version:u8  kind:u8  msgId:u16be  total:u32be  offset:u32be      (12 bytes)
 * fragment    = bytes [offset, offset + length) of message msgId, length ≤ MTU
 * crc         = CRC-32C of header and fragment, u32be
 * version     = 1
 * kind        = 0 data | 1 close (the sender ends its session; every other field 0, no fragment)
 * ```
 *
 * A message of `total` bytes is cut into fragments of at most `mtu` bytes (default 256) sent in
 * order; an empty message (`total` 0, one empty fragment) is a heartbeat. Message ids count up
 * per message and wrap at 2^16. Each message starts with an extra 0x00 (the decoder skips empty
 * frames), so that a delimiter lost to noise costs one message, not the next one as well.
 *
 * The decoder is an explicit state machine, HUNT → CODE ⇄ DATA → (frame end) → CODE:
 * - CODE expects a COBS code byte (or the delimiter that ends the frame), DATA copies the bytes
 *   of a block, HUNT discards bytes up to the next 0x00 after an error inside a frame.
 * - Every length is checked before anything is allocated: a frame's bytes go into one buffer of
 *   `12 + mtu + 4` bytes allocated once; a message's reassembly buffer is allocated when its
 *   first fragment has passed the CRC and its `total` is within `maxMessageSize` and the
 *   reassembly budget (`maxReassemblyBytes`, `maxPartialMessages`; the oldest partial messages
 *   are dropped to make room).
 * - Bad input never throws: it is dropped and counted in `stats.rejected` by reason, and the
 *   decoder carries on with the next frame.
 *
 * | reason               | counted once per                                                        |
 * |----------------------|-------------------------------------------------------------------------|
 * | `cobs`               | frame whose COBS blocks run past its delimiter                           |
 * | `length`             | frame shorter than header + CRC or longer than the MTU allows, or a message `total` over `maxMessageSize` |
 * | `crc`                | frame whose CRC-32C does not match                                       |
 * | `version`            | frame of another framing version                                         |
 * | `header`             | frame whose header fields do not fit together (unknown kind, fragment past `total`, …) |
 * | `sequence`           | fragment that does not continue its message (a fragment was lost); the partial message is dropped with it |
 * | `reassembly-timeout` | partial message that received no fragment for `reassemblyTimeout` ms     |
 * | `overflow`           | message dropped to stay within `maxReassemblyBytes` / `maxPartialMessages` |
 *
 * @module
 */
import { tlError } from '../errors.ts'
import { CobsEncoder } from './cobs.ts'
import { crc32c } from './crc32c.ts'

// ---- wire format ----

/** The framing version, first byte of every raw frame. */
export const SERIAL_FRAMING_VERSION = 1
/** Bytes of the raw frame header. */
export const SERIAL_FRAME_HEADER = 12
/** Bytes of the CRC-32C trailer. */
export const SERIAL_FRAME_CRC = 4
/** The frame delimiter. */
export const SERIAL_DELIMITER = 0x00
/** Frame kinds. */
export const SERIAL_FRAME_KIND = { DATA: 0, CLOSE: 1 } as const

// ---- defaults ----

/** Fragment (payload) bytes per link frame. */
export const DEFAULT_SERIAL_MTU = 256
/** Largest MTU accepted: a frame must stay small enough to be resent cheaply and checked by a CRC-32C. */
export const MAX_SERIAL_MTU = 65_536
/** Largest message, in bytes (the transports' default frame limit). */
export const DEFAULT_SERIAL_MAX_MESSAGE_SIZE = 1024 * 1024
/** A partial message that received no fragment for this long (ms) is dropped. */
export const DEFAULT_SERIAL_REASSEMBLY_TIMEOUT_MS = 5_000
/** Partial messages held at once. */
export const DEFAULT_SERIAL_MAX_PARTIAL_MESSAGES = 4

const OVERHEAD = SERIAL_FRAME_HEADER + SERIAL_FRAME_CRC

export interface SerialFramingOptions {
  /** Fragment bytes per frame, 1..65536. Default 256. Both ends must use the same MTU (or the receiver a larger one). */
  mtu?: number
  /** Largest message accepted, in bytes. Default 1 MiB. */
  maxMessageSize?: number
  /** Bytes all partial messages may hold together. Default 2 × maxMessageSize. */
  maxReassemblyBytes?: number
  /** Partial messages held at once. Default 4. */
  maxPartialMessages?: number
  /** Drop a partial message that received nothing for this long (ms). Default 5000. */
  reassemblyTimeout?: number
  /** The clock (ms). Default Date.now. */
  now?: () => number
}

export type ResolvedSerialFramingOptions = Required<SerialFramingOptions>

export function resolveSerialFramingOptions(o: SerialFramingOptions = {}): ResolvedSerialFramingOptions {
  const mtu = o.mtu ?? DEFAULT_SERIAL_MTU
  const maxMessageSize = o.maxMessageSize ?? DEFAULT_SERIAL_MAX_MESSAGE_SIZE
  const r: ResolvedSerialFramingOptions = {
    mtu,
    maxMessageSize,
    maxReassemblyBytes: o.maxReassemblyBytes ?? 2 * maxMessageSize,
    maxPartialMessages: o.maxPartialMessages ?? DEFAULT_SERIAL_MAX_PARTIAL_MESSAGES,
    reassemblyTimeout: o.reassemblyTimeout ?? DEFAULT_SERIAL_REASSEMBLY_TIMEOUT_MS,
    now: o.now ?? Date.now,
  }
  const int = (name: string, v: number, min: number, max: number): void => {
    if (!Number.isInteger(v) || v < min || v > max) throw tlError('ERR_INVALID_ARGUMENT', `serial framing: ${name} must be an integer in ${min}..${max} (got ${v})`)
  }
  int('mtu', r.mtu, 1, MAX_SERIAL_MTU)
  int('maxMessageSize', r.maxMessageSize, 0, 0xffffffff)
  int('maxReassemblyBytes', r.maxReassemblyBytes, 0, Number.MAX_SAFE_INTEGER)
  int('maxPartialMessages', r.maxPartialMessages, 0, 65_536)
  int('reassemblyTimeout', r.reassemblyTimeout, 1, 2 ** 31 - 1)
  return r
}

// ---------------------------------------------------------------- encoder

/** Cuts messages into frames and encodes them. */
export class SerialFrameEncoder {
  readonly mtu: number
  #nextId = 0
  #cobs = new CobsEncoder()
  #header = Buffer.alloc(SERIAL_FRAME_HEADER)
  #crc = Buffer.alloc(SERIAL_FRAME_CRC)

  constructor(options: Pick<SerialFramingOptions, 'mtu'> = {}) {
    this.mtu = resolveSerialFramingOptions({ mtu: options.mtu }).mtu
  }

  /** Bytes the encoding of a `size`-byte message can take at most. */
  maxEncodedLength(size: number): number {
    let n = 1 // the leading delimiter
    let left = size
    do {
      const raw = OVERHEAD + Math.min(left, this.mtu)
      n += raw + Math.floor(raw / 254) + 2 // COBS overhead and the delimiter
      left -= this.mtu
    } while (left > 0)
    return n
  }

  /**
   * Encodes one message, given as the concatenation of `parts` (e.g. an envelope head and its
   * payload), as frames each followed by the delimiter. Nothing is copied but into the output.
   */
  encode(...parts: Uint8Array[]): Buffer {
    let total = 0
    for (const p of parts) total += p.length
    if (total > 0xffffffff) throw tlError('ERR_INVALID_ARGUMENT', `a message of ${total} bytes cannot be framed (limit 2^32-1)`)
    const id = this.#nextId
    this.#nextId = (id + 1) & 0xffff
    const out = Buffer.allocUnsafe(this.maxEncodedLength(total))
    const h = this.#header
    h[0] = SERIAL_FRAMING_VERSION
    h[1] = SERIAL_FRAME_KIND.DATA
    h.writeUInt16BE(id, 2)
    h.writeUInt32BE(total, 4)
    out[0] = SERIAL_DELIMITER
    let at = 1
    let part = 0
    let partOff = 0
    let offset = 0
    do {
      const len = Math.min(total - offset, this.mtu)
      h.writeUInt32BE(offset, 8)
      let crc = crc32c(h)
      this.#cobs.begin(out, at)
      this.#cobs.write(h)
      // the fragment: [offset, offset + len) of the parts
      let need = len
      while (need > 0) {
        const p = parts[part]!
        const take = Math.min(need, p.length - partOff)
        if (take > 0) {
          crc = crc32c(p, partOff, partOff + take, crc)
          this.#cobs.write(p, partOff, partOff + take)
          partOff += take
          need -= take
        }
        if (partOff === p.length) {
          part++
          partOff = 0
        }
      }
      this.#crc.writeUInt32BE(crc, 0)
      this.#cobs.write(this.#crc)
      at = this.#cobs.end()
      out[at++] = SERIAL_DELIMITER
      offset += len
    } while (offset < total)
    return out.subarray(0, at)
  }

  /** The close frame: the sender ends its session on the line. */
  encodeClose(): Buffer {
    const raw = Buffer.alloc(OVERHEAD)
    raw[0] = SERIAL_FRAMING_VERSION
    raw[1] = SERIAL_FRAME_KIND.CLOSE
    raw.writeUInt32BE(crc32c(raw, 0, SERIAL_FRAME_HEADER), SERIAL_FRAME_HEADER)
    const out = Buffer.allocUnsafe(1 + OVERHEAD + 2 + 1)
    out[0] = SERIAL_DELIMITER
    this.#cobs.begin(out, 1)
    this.#cobs.write(raw)
    const at = this.#cobs.end()
    out[at] = SERIAL_DELIMITER
    return out.subarray(0, at + 1)
  }
}

// ---------------------------------------------------------------- decoder

export type SerialRejectReason = 'cobs' | 'length' | 'crc' | 'version' | 'header' | 'sequence' | 'reassembly-timeout' | 'overflow'

export interface SerialFramingStats {
  /** Frames that passed every check. */
  frames: number
  /** Messages delivered (heartbeats included). */
  messages: number
  /** Close frames received. */
  closes: number
  /** Bytes discarded while looking for the next delimiter after an error. */
  discardedBytes: number
  /** Rejected frames and dropped partial messages, by reason. */
  rejected: Record<SerialRejectReason, number>
}

/** A zeroed set of counters. */
export function createSerialFramingStats(): SerialFramingStats {
  return {
    frames: 0,
    messages: 0,
    closes: 0,
    discardedBytes: 0,
    rejected: { cobs: 0, length: 0, crc: 0, version: 0, header: 0, sequence: 0, 'reassembly-timeout': 0, overflow: 0 },
  }
}

export interface SerialFrameHandlers {
  /** A complete message (empty: a heartbeat). Its bytes are the caller's to keep. */
  onMessage(message: Uint8Array): void
  /** A close frame arrived. */
  onClose?(): void
  /** A frame or partial message was rejected (already counted in `stats`). */
  onReject?(reason: SerialRejectReason): void
}

interface Partial {
  id: number
  total: number
  buf: Buffer
  received: number
  /** When the last fragment arrived. */
  last: number
}

const HUNT = 0
const CODE = 1
const DATA = 2

const EMPTY = new Uint8Array(0)

/** Turns a received byte stream back into messages. */
export class SerialFrameDecoder {
  readonly options: ResolvedSerialFramingOptions
  /** Counters (shared with other decoders when passed in). */
  readonly stats: SerialFramingStats
  readonly #handlers: SerialFrameHandlers
  /** The raw frame being decoded (allocated once: the largest valid frame). */
  readonly #frame: Buffer
  #len = 0
  #state = CODE
  /** Bytes left in the current COBS block. */
  #remaining = 0
  /** The code byte of the previous block of this frame (0: none yet). */
  #lastCode = 0
  #partials = new Map<number, Partial>()
  #partialBytes = 0
  #halted = false

  /** @param stats counters to add to (e.g. one set for all the sessions of a port); default a new set */
  constructor(handlers: SerialFrameHandlers, options: SerialFramingOptions = {}, stats: SerialFramingStats = createSerialFramingStats()) {
    this.#handlers = handlers
    this.stats = stats
    this.options = resolveSerialFramingOptions(options)
    this.#frame = Buffer.allocUnsafe(OVERHEAD + this.options.mtu)
  }

  /** Bytes held: partial messages and the frame being decoded. */
  get buffered(): number {
    return this.#partialBytes + this.#len
  }

  /** Partial messages held. */
  get partialMessages(): number {
    return this.#partials.size
  }

  /**
   * Stops decoding: the `push()` in progress returns after the frame being delivered, and later
   * ones consume nothing. The rest of the stream can then be handed to another decoder.
   */
  halt(): void {
    this.#halted = true
  }

  get halted(): boolean {
    return this.#halted
  }

  /**
   * Feeds received bytes from `start`. Never throws on bad input. Returns the offset up to which
   * the chunk was consumed: `chunk.length`, or less when {@link halt} was called meanwhile.
   */
  push(chunk: Uint8Array, start = 0): number {
    const n = chunk.length
    const frame = this.#frame
    const cap = frame.length
    let i = start
    while (i < n && !this.#halted) {
      if (this.#state === HUNT) {
        const z = chunk.indexOf(SERIAL_DELIMITER, i)
        if (z < 0) {
          this.stats.discardedBytes += n - i
          return n
        }
        this.stats.discardedBytes += z - i
        i = z + 1
        this.#startFrame()
        continue
      }
      if (this.#state === CODE) {
        const code = chunk[i++]!
        if (code === SERIAL_DELIMITER) {
          this.#endFrame()
          continue
        }
        // a block that is not full stands for its bytes and a zero, when another block follows
        if (this.#lastCode !== 0 && this.#lastCode !== 0xff) {
          if (this.#len >= cap) {
            this.#reject('length')
            this.#state = HUNT
            continue
          }
          frame[this.#len++] = 0
        }
        this.#lastCode = code
        this.#remaining = code - 1
        if (this.#remaining > 0) this.#state = DATA
        continue
      }
      // DATA: copy the block's bytes that are in this chunk; a 0x00 inside cuts the frame short
      const run = Math.min(this.#remaining, n - i)
      const zi = chunk.subarray(i, i + run).indexOf(SERIAL_DELIMITER)
      const z = zi < 0 ? -1 : i + zi
      const take = z < 0 ? run : zi
      if (this.#len + take > cap) {
        this.#reject('length')
        this.#state = HUNT
        continue
      }
      frame.set(chunk.subarray(i, i + take), this.#len)
      this.#len += take
      i += take
      this.#remaining -= take
      if (z >= 0) {
        // the delimiter arrived inside a block: the frame is truncated, and the next one starts
        i++
        this.#reject('cobs')
        this.#startFrame()
      } else if (this.#remaining === 0) {
        this.#state = CODE
      }
    }
    return i
  }

  #startFrame(): void {
    this.#state = CODE
    this.#len = 0
    this.#lastCode = 0
    this.#remaining = 0
  }

  #reject(reason: SerialRejectReason): void {
    this.stats.rejected[reason]++
    this.#handlers.onReject?.(reason)
  }

  #endFrame(): void {
    const len = this.#len
    const f = this.#frame
    this.#startFrame()
    if (len === 0) return // idle fill between delimiters
    if (len < OVERHEAD) return this.#reject('length')
    const body = len - SERIAL_FRAME_CRC
    if (crc32c(f, 0, body) !== f.readUInt32BE(body)) return this.#reject('crc')
    if (f[0] !== SERIAL_FRAMING_VERSION) return this.#reject('version')
    const kind = f[1]!
    const id = f.readUInt16BE(2)
    const total = f.readUInt32BE(4)
    const offset = f.readUInt32BE(8)
    const fragLen = body - SERIAL_FRAME_HEADER
    if (kind === SERIAL_FRAME_KIND.CLOSE) {
      if (id !== 0 || total !== 0 || offset !== 0 || fragLen !== 0) return this.#reject('header')
      this.stats.frames++
      this.stats.closes++
      this.#handlers.onClose?.()
      return
    }
    if (kind !== SERIAL_FRAME_KIND.DATA) return this.#reject('header')
    if (total > this.options.maxMessageSize) return this.#reject('length')
    if (offset + fragLen > total || (fragLen === 0 && total !== 0)) return this.#reject('header')
    this.stats.frames++
    const existing = this.#partials.get(id)
    if (offset === 0) {
      if (existing !== undefined) this.#dropPartial(existing, 'sequence')
      if (fragLen === total) {
        this.#deliver(total === 0 ? EMPTY : Buffer.from(f.subarray(SERIAL_FRAME_HEADER, body)))
        return
      }
      if (!this.#makeRoom(total)) return
      const buf = Buffer.allocUnsafe(total)
      f.copy(buf, 0, SERIAL_FRAME_HEADER, body)
      this.#partials.set(id, { id, total, buf, received: fragLen, last: this.options.now() })
      this.#partialBytes += total
      return
    }
    if (existing === undefined) return this.#reject('sequence')
    if (existing.total !== total || existing.received !== offset) {
      this.#dropPartial(existing, 'sequence')
      return
    }
    f.copy(existing.buf, offset, SERIAL_FRAME_HEADER, body)
    existing.received += fragLen
    existing.last = this.options.now()
    if (existing.received === total) {
      this.#partials.delete(id)
      this.#partialBytes -= total
      this.#deliver(existing.buf)
    }
  }

  /** Drops the oldest partial messages until one of `size` bytes fits; false if it never can. */
  #makeRoom(size: number): boolean {
    const { maxReassemblyBytes, maxPartialMessages } = this.options
    if (size > maxReassemblyBytes || maxPartialMessages === 0) {
      this.#reject('overflow')
      return false
    }
    while (this.#partials.size >= maxPartialMessages || this.#partialBytes + size > maxReassemblyBytes) {
      const oldest = this.#partials.values().next().value as Partial
      this.#dropPartial(oldest, 'overflow')
    }
    return true
  }

  #dropPartial(p: Partial, reason: SerialRejectReason): void {
    this.#partials.delete(p.id)
    this.#partialBytes -= p.total
    this.#reject(reason)
  }

  #deliver(message: Uint8Array): void {
    this.stats.messages++
    this.#handlers.onMessage(message)
  }

  /** Drops partial messages that received nothing for `reassemblyTimeout` ms. Call it now and then. */
  expire(now = this.options.now()): void {
    for (const p of this.#partials.values()) {
      if (now - p.last >= this.options.reassemblyTimeout) this.#dropPartial(p, 'reassembly-timeout')
    }
  }

  /**
   * Restarts the reassembly clock of every partial message: call it when reading resumes after
   * a pause, so that time spent paused (the bytes waiting unread) does not count.
   */
  refresh(now = this.options.now()): void {
    for (const p of this.#partials.values()) p.last = now
  }
}
