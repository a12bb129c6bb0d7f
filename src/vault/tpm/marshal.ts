/**
 * Marshalling of TPM 2.0 structures: a growable big-endian {@link TpmWriter} and a bounds-checked
 * {@link TpmReader}, plus the shared structures (TPML_PCR_SELECTION, TPMT_SIGNATURE, …).
 *
 * Every read checks the remaining length first; a short or malformed input is a
 * `ThroughlineError` `ERR_TPM_MALFORMED` with `details: { what, offset, need, have }`.
 *
 * Wire forms (Part 2): integers are big-endian; `TPM2B_X` = `u16 size ‖ bytes`;
 * `TPML_X` = `u32 count ‖ items`.
 *
 * @module
 */
import { tlError, type ThroughlineError } from '../../errors.ts'
import { HASH_ALGS, PCR_COUNT, PCR_SELECT_SIZE, TPM_ALG } from './constants.ts'

/** Upper bounds of list counts accepted when parsing (defence against hostile lengths). */
const MAX_PCR_SELECTIONS = 16
const MAX_SIZEOF_SELECT = 32
const MAX_DIGESTS = 64

/** Builds an `ERR_TPM_MALFORMED` error. */
export function malformed(message: string, details?: Record<string, unknown>): ThroughlineError {
  return tlError('ERR_TPM_MALFORMED', message, details === undefined ? undefined : { details })
}

/** A growable big-endian writer. */
export class TpmWriter {
  #buf: Uint8Array
  #view: DataView
  #len = 0

  constructor(initial = 256) {
    this.#buf = new Uint8Array(initial)
    this.#view = new DataView(this.#buf.buffer)
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#len
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return
    let size = this.#buf.length * 2
    while (size < this.#len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.#buf.subarray(0, this.#len))
    this.#buf = next
    this.#view = new DataView(next.buffer)
  }

  u8(v: number): this {
    this.#reserve(1)
    this.#view.setUint8(this.#len, v)
    this.#len += 1
    return this
  }

  u16(v: number): this {
    this.#reserve(2)
    this.#view.setUint16(this.#len, v)
    this.#len += 2
    return this
  }

  u32(v: number): this {
    this.#reserve(4)
    this.#view.setUint32(this.#len, v >>> 0)
    this.#len += 4
    return this
  }

  u64(v: bigint): this {
    this.#reserve(8)
    this.#view.setBigUint64(this.#len, v)
    this.#len += 8
    return this
  }

  /** Raw bytes, no size prefix. */
  bytes(b: Uint8Array): this {
    this.#reserve(b.length)
    this.#buf.set(b, this.#len)
    this.#len += b.length
    return this
  }

  /** A TPM2B: `u16 size ‖ bytes`. */
  tpm2b(b: Uint8Array = EMPTY): this {
    if (b.length > 0xffff) throw tlError('ERR_INVALID_ARGUMENT', `a TPM2B cannot hold ${b.length} bytes`)
    return this.u16(b.length).bytes(b)
  }

  /** A sized structure (e.g. TPM2B_PUBLIC): `u16 size ‖ body`, where `body` writes the structure. */
  sized(body: (w: TpmWriter) => void): this {
    const at = this.#len
    this.u16(0)
    body(this)
    const size = this.#len - at - 2
    if (size > 0xffff) throw tlError('ERR_INVALID_ARGUMENT', `a sized structure cannot hold ${size} bytes`)
    this.#view.setUint16(at, size)
    return this
  }

  /** Overwrites a u32 at `offset` (e.g. a command's size once known). */
  patchU32(offset: number, v: number): this {
    this.#view.setUint32(offset, v >>> 0)
    return this
  }

  /** A copy of the bytes written. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len)
  }
}

const EMPTY = new Uint8Array(0)

/** A bounds-checked big-endian reader over one buffer. */
export class TpmReader {
  readonly #buf: Uint8Array
  readonly #view: DataView
  #off = 0
  /** What is being parsed, for error messages (e.g. 'TPM2_Quote response'). */
  readonly what: string

  constructor(buf: Uint8Array, what = 'TPM structure') {
    this.#buf = buf
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    this.what = what
  }

  get offset(): number {
    return this.#off
  }

  get remaining(): number {
    return this.#buf.length - this.#off
  }

  #need(n: number, field: string): void {
    if (n > this.remaining) {
      throw malformed(`${this.what}: ${field} needs ${n} bytes at offset ${this.#off}, ${this.remaining} left`, {
        what: this.what,
        field,
        offset: this.#off,
        need: n,
        have: this.remaining,
      })
    }
  }

  u8(field = 'u8'): number {
    this.#need(1, field)
    return this.#view.getUint8(this.#off++)
  }

  u16(field = 'u16'): number {
    this.#need(2, field)
    const v = this.#view.getUint16(this.#off)
    this.#off += 2
    return v
  }

  u32(field = 'u32'): number {
    this.#need(4, field)
    const v = this.#view.getUint32(this.#off)
    this.#off += 4
    return v
  }

  u64(field = 'u64'): bigint {
    this.#need(8, field)
    const v = this.#view.getBigUint64(this.#off)
    this.#off += 8
    return v
  }

  /** `n` raw bytes (a view, not a copy). */
  bytes(n: number, field = 'bytes'): Uint8Array {
    this.#need(n, field)
    const b = this.#buf.subarray(this.#off, this.#off + n)
    this.#off += n
    return b
  }

  /** A TPM2B's content (`u16 size ‖ bytes`), optionally with a maximum size. */
  tpm2b(field = 'TPM2B', max = 0xffff): Uint8Array {
    const size = this.u16(`${field}.size`)
    if (size > max) throw malformed(`${this.what}: ${field} has size ${size}, over ${max}`, { what: this.what, field, size, max })
    return this.bytes(size, field)
  }

  /** A TPM2B with its size prefix (e.g. a TPM2B_PUBLIC / TPM2B_PRIVATE blob kept as bytes). */
  tpm2bRaw(field = 'TPM2B'): Uint8Array {
    this.#need(2, `${field}.size`)
    const size = this.#view.getUint16(this.#off)
    return this.bytes(2 + size, field)
  }

  /** A reader over the next `n` bytes; this reader skips past them. */
  sub(n: number, what: string): TpmReader {
    return new TpmReader(this.bytes(n, what), what)
  }

  /** Throws unless every byte was consumed. */
  end(): void {
    if (this.remaining !== 0) {
      throw malformed(`${this.what}: ${this.remaining} unexpected trailing bytes at offset ${this.#off}`, {
        what: this.what,
        offset: this.#off,
        trailing: this.remaining,
      })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Shared structures

/** One bank of a PCR selection: a hash algorithm and the PCR indices. */
export interface PcrSelection {
  hashAlg: number
  pcrs: number[]
}

/** Normalizes a list of PCR indices: integers in [0, PCR_COUNT), sorted, unique. */
export function normalizePcrs(pcrs: readonly number[]): number[] {
  for (const p of pcrs) {
    if (!Number.isInteger(p) || p < 0 || p >= PCR_COUNT) {
      throw tlError('ERR_INVALID_ARGUMENT', `PCR index ${p} is not an integer in [0, ${PCR_COUNT})`)
    }
  }
  return [...new Set(pcrs)].sort((a, b) => a - b)
}

/** Writes a TPML_PCR_SELECTION. PCR n is bit n%8 of byte n/8; the bitmap is PCR_SELECT_SIZE (3) bytes. */
export function writePcrSelection(w: TpmWriter, selections: readonly PcrSelection[]): void {
  w.u32(selections.length)
  for (const s of selections) {
    const bitmap = new Uint8Array(PCR_SELECT_SIZE)
    for (const p of normalizePcrs(s.pcrs)) bitmap[p >> 3]! |= 1 << (p & 7)
    w.u16(s.hashAlg).u8(PCR_SELECT_SIZE).bytes(bitmap)
  }
}

/** The TPML_PCR_SELECTION bytes of `selections`. */
export function encodePcrSelection(selections: readonly PcrSelection[]): Uint8Array {
  const w = new TpmWriter(64)
  writePcrSelection(w, selections)
  return w.finish()
}

/** Reads a TPML_PCR_SELECTION; PCR indices come out ascending per bank. */
export function readPcrSelection(r: TpmReader, field = 'TPML_PCR_SELECTION'): PcrSelection[] {
  const count = r.u32(`${field}.count`)
  if (count > MAX_PCR_SELECTIONS) throw malformed(`${r.what}: ${field} count ${count} is over ${MAX_PCR_SELECTIONS}`, { count })
  const out: PcrSelection[] = []
  for (let i = 0; i < count; i++) {
    const hashAlg = r.u16(`${field}[${i}].hash`)
    const sizeofSelect = r.u8(`${field}[${i}].sizeofSelect`)
    if (sizeofSelect > MAX_SIZEOF_SELECT) throw malformed(`${r.what}: ${field} sizeofSelect ${sizeofSelect} is over ${MAX_SIZEOF_SELECT}`)
    const bitmap = r.bytes(sizeofSelect, `${field}[${i}].pcrSelect`)
    const pcrs: number[] = []
    for (let p = 0; p < sizeofSelect * 8; p++) if ((bitmap[p >> 3]! >> (p & 7)) & 1) pcrs.push(p)
    out.push({ hashAlg, pcrs })
  }
  return out
}

/** Reads a TPML_DIGEST (at most 64 entries, each at most 64 bytes). */
export function readDigestList(r: TpmReader, field = 'TPML_DIGEST'): Uint8Array[] {
  const count = r.u32(`${field}.count`)
  if (count > MAX_DIGESTS) throw malformed(`${r.what}: ${field} count ${count} is over ${MAX_DIGESTS}`, { count })
  const out: Uint8Array[] = []
  for (let i = 0; i < count; i++) out.push(r.tpm2b(`${field}[${i}]`, 64))
  return out
}

/** A TPMT_SIGNATURE. ECC schemes carry r and s; RSA schemes carry `sig`. */
export interface TpmSignature {
  sigAlg: number
  hashAlg: number
  r?: Uint8Array
  s?: Uint8Array
  sig?: Uint8Array
}

/** Reads a TPMT_SIGNATURE (ECDSA/ECDAA/SM2/ECSCHNORR, RSASSA/RSAPSS, HMAC). */
export function readSignature(r: TpmReader, field = 'TPMT_SIGNATURE'): TpmSignature {
  const sigAlg = r.u16(`${field}.sigAlg`)
  switch (sigAlg) {
    case TPM_ALG.ECDSA:
    case TPM_ALG.ECDAA:
    case TPM_ALG.SM2:
    case TPM_ALG.ECSCHNORR: {
      const hashAlg = r.u16(`${field}.hash`)
      const rr = r.tpm2b(`${field}.signatureR`, 128)
      const ss = r.tpm2b(`${field}.signatureS`, 128)
      return { sigAlg, hashAlg, r: rr.slice(), s: ss.slice() }
    }
    case TPM_ALG.RSASSA:
    case TPM_ALG.RSAPSS: {
      const hashAlg = r.u16(`${field}.hash`)
      return { sigAlg, hashAlg, sig: r.tpm2b(`${field}.sig`, 512).slice() }
    }
    case TPM_ALG.HMAC: {
      const hashAlg = r.u16(`${field}.hash`)
      const h = HASH_ALGS.get(hashAlg)
      if (h === undefined) throw malformed(`${r.what}: ${field} HMAC hash 0x${hashAlg.toString(16)} is unknown`)
      return { sigAlg, hashAlg, sig: r.bytes(h.size, `${field}.digest`).slice() }
    }
    default:
      throw malformed(`${r.what}: ${field} signature algorithm 0x${sigAlg.toString(16)} is not supported`, { sigAlg })
  }
}

/** Parses a whole TPMT_SIGNATURE. */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const r = new TpmReader(bytes, 'TPMT_SIGNATURE')
  const sig = readSignature(r)
  r.end()
  return sig
}

/** Encodes a TPMT_SIGNATURE (the inverse of {@link parseSignature}). */
export function encodeSignature(sig: TpmSignature): Uint8Array {
  const w = new TpmWriter(160)
  w.u16(sig.sigAlg).u16(sig.hashAlg)
  if (sig.r !== undefined && sig.s !== undefined) w.tpm2b(sig.r).tpm2b(sig.s)
  else if (sig.sigAlg === TPM_ALG.HMAC && sig.sig !== undefined) w.bytes(sig.sig)
  else if (sig.sig !== undefined) w.tpm2b(sig.sig)
  else throw tlError('ERR_INVALID_ARGUMENT', 'a signature needs r and s, or sig')
  return w.finish()
}

/**
 * An ECDSA signature as IEEE P1363 `r ‖ s`, each left-padded to `size` bytes (32 for P-256), as
 * node:crypto verifies with `dsaEncoding: 'ieee-p1363'`.
 */
export function signatureToP1363(sig: TpmSignature, size = 32): Uint8Array {
  if (sig.r === undefined || sig.s === undefined) throw malformed('the signature is not an ECC signature (no r, s)', { sigAlg: sig.sigAlg })
  const out = new Uint8Array(2 * size)
  const put = (v: Uint8Array, at: number, name: string): void => {
    let i = 0
    while (i < v.length && v[i] === 0 && v.length - i > size) i++
    const trimmed = v.subarray(i)
    if (trimmed.length > size) throw malformed(`signature ${name} is ${trimmed.length} bytes, over ${size}`)
    out.set(trimmed, at + size - trimmed.length)
  }
  put(sig.r, 0, 'r')
  put(sig.s, size, 's')
  return out
}
