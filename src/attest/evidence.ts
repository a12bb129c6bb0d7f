/**
 * Encoding and checked decoding of evidence and quote bodies (msgpack). Every decode failure is
 * ERR_ATTEST_EVIDENCE; sizes and counts are checked before anything is decoded further.
 *
 * @module
 */
import { pack, unpack } from 'msgpackr'
import { tlError } from '../errors.ts'
import { MAX_ENDORSEMENT_BYTES, MAX_ENDORSEMENTS, MAX_EVENT_DATA, MAX_EVIDENCE_BYTES, MAX_LOG_ENTRIES } from './constants.ts'
import type { EventLogDelta, EventLogEntry, Evidence, QuoteBody } from './types.ts'

function bad(what: string): never {
  throw tlError('ERR_ATTEST_EVIDENCE', what)
}

function isBytes(x: unknown, min = 0, max = Infinity): x is Uint8Array {
  return x instanceof Uint8Array && x.length >= min && x.length <= max
}

/** Unpacks msgpack bytes of at most `max` bytes; ERR_ATTEST_EVIDENCE otherwise. */
export function unpackChecked(bytes: Uint8Array, max: number, what: string): unknown {
  if (!(bytes instanceof Uint8Array)) bad(`${what} is not bytes`)
  if (bytes.length > max) bad(`${what} has ${bytes.length} bytes, over the limit of ${max}`)
  try {
    return unpack(bytes)
  } catch (err) {
    throw tlError('ERR_ATTEST_EVIDENCE', `${what} is not valid msgpack`, { cause: err })
  }
}

export function encodeQuoteBody(b: QuoteBody): Uint8Array {
  return pack({ v: 1, attest: b.attest, sig: b.sig, pcrs: b.pcrs, akPub: b.akPub })
}

export function decodeQuoteBody(bytes: Uint8Array): QuoteBody {
  const p = unpackChecked(bytes, MAX_EVIDENCE_BYTES, 'quote body') as Partial<QuoteBody> | null
  if (p === null || typeof p !== 'object' || p.v !== 1) bad('quote body: not version 1')
  if (!isBytes(p.attest, 1, 1024)) bad('quote body: attest missing or over 1024 bytes')
  if (!isBytes(p.sig, 1, 1024)) bad('quote body: sig missing or over 1024 bytes')
  if (!isBytes(p.akPub, 1, 1024)) bad('quote body: akPub missing or over 1024 bytes')
  if (!Array.isArray(p.pcrs) || p.pcrs.length > 24) bad('quote body: pcrs must be a list of at most 24 [index, value] pairs')
  const pcrs: [number, Uint8Array][] = []
  for (const e of p.pcrs as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2 || !Number.isInteger(e[0]) || e[0] < 0 || e[0] > 23 || !isBytes(e[1], 32, 32)) bad('quote body: a PCR entry is not [index 0..23, 32 bytes]')
    pcrs.push([e[0] as number, e[1] as Uint8Array])
  }
  return { v: 1, attest: p.attest, sig: p.sig, pcrs, akPub: p.akPub }
}

export function checkLog(log: unknown): EventLogDelta {
  const l = log as Partial<EventLogDelta> | null
  if (l === null || typeof l !== 'object' || !Number.isInteger(l.from) || (l.from as number) < 0 || !Array.isArray(l.entries)) bad('event log: not {from, entries}')
  if (l.entries.length > MAX_LOG_ENTRIES) bad(`event log: ${l.entries.length} entries, over the limit of ${MAX_LOG_ENTRIES}`)
  const entries: EventLogEntry[] = []
  for (const e of l.entries as Partial<EventLogEntry>[]) {
    if (e === null || typeof e !== 'object' || !Number.isInteger(e.pcr) || (e.pcr as number) < 0 || (e.pcr as number) > 23) bad('event log: an entry has no PCR index 0..23')
    if (!isBytes(e.digest, 32, 32)) bad('event log: an entry digest is not 32 bytes')
    if (typeof e.type !== 'string' || e.type.length > 64) bad('event log: an entry type is not a short string')
    if (e.data !== undefined && e.data !== null && !isBytes(e.data, 0, MAX_EVENT_DATA)) bad(`event log: an entry's data is not bytes of at most ${MAX_EVENT_DATA}`)
    const entry: EventLogEntry = { pcr: e.pcr as number, digest: e.digest, type: e.type }
    if (e.data instanceof Uint8Array) entry.data = e.data
    entries.push(entry)
  }
  return { from: l.from as number, entries }
}

/** Checks the shape of evidence decoded from a handshake payload or round message. */
export function checkEvidence(ev: unknown): Evidence {
  const e = ev as Partial<Evidence> | null
  if (e === null || typeof e !== 'object') bad('evidence: not a map')
  if (e.suite !== 'tpm2' && e.suite !== 'sim') bad(`evidence: unknown suite ${String(e.suite).slice(0, 32)}`)
  if (typeof e.fmt !== 'string' || e.fmt.length > 64) bad('evidence: fmt missing')
  if (typeof e.handleAlg !== 'string' || e.handleAlg.length > 32) bad('evidence: handleAlg missing')
  if (!isBytes(e.body, 1, MAX_EVIDENCE_BYTES)) bad(`evidence: body missing or over ${MAX_EVIDENCE_BYTES} bytes`)
  const out: Evidence = { suite: e.suite, fmt: e.fmt, handleAlg: e.handleAlg, body: e.body }
  if (e.endorsements !== undefined && e.endorsements !== null) {
    if (!Array.isArray(e.endorsements) || e.endorsements.length > MAX_ENDORSEMENTS) bad(`evidence: at most ${MAX_ENDORSEMENTS} endorsements`)
    for (const c of e.endorsements) if (!isBytes(c, 1, MAX_ENDORSEMENT_BYTES)) bad(`evidence: an endorsement is over ${MAX_ENDORSEMENT_BYTES} bytes`)
    out.endorsements = e.endorsements
  }
  if (e.log !== undefined && e.log !== null) out.log = checkLog(e.log)
  return out
}

export function encodeEvidence(ev: Evidence): Uint8Array {
  return pack(ev)
}

export function decodeEvidence(bytes: Uint8Array): Evidence {
  return checkEvidence(unpackChecked(bytes, MAX_EVIDENCE_BYTES + 16 * 1024, 'evidence'))
}
