/**
 * TPM-shaped quotes: building and checking the byte-exact TPM 2.0 structures that both the sim
 * attester and the tpm2 attester put in evidence, so one verifier path appraises both.
 *
 * A quote is a `TPMS_ATTEST` (parsed by `parseAttest` of src/vault/tpm/attest.ts):
 * ```
 * u32 magic 0xff544347 ‖ u16 type 0x8018 (quote) ‖ TPM2B_NAME qualifiedSigner ‖ TPM2B_DATA extraData
 *   ‖ TPMS_CLOCK_INFO { u64 clock ‖ u32 resetCount ‖ u32 restartCount ‖ u8 safe } ‖ u64 firmwareVersion
 *   ‖ TPML_PCR_SELECTION (one bank: SHA-256, 3-byte bitmap) ‖ TPM2B_DIGEST pcrDigest
 * ```
 * signed as a `TPMT_SIGNATURE` (ECDSA 0x0018, SHA-256 0x000B, TPM2B r, TPM2B s) over
 * SHA-256(TPMS_ATTEST bytes).
 *
 * `pcrDigest` = SHA-256 of the selected PCR values concatenated in ascending PCR order
 * (`pcrCompositeDigest` of src/vault/tpm/templates.ts).
 *
 * **Sim AK name.** A real TPM names the AK `u16 nameAlg ‖ H(TPMT_PUBLIC)`. The sim AK has no
 * TPMT_PUBLIC, so its name is `0x000B ‖ SHA-256(SPKI DER of the AK)` ({@link simAkName}); the
 * verifier checks it for sim evidence.
 *
 * @module
 */
import { createHash, sign, verify, type KeyObject } from 'node:crypto'
import { tlError } from '../errors.ts'
import type { TpmAttest } from '../vault/tpm/attest.ts'
import { TPM_ALG, TPM_GENERATED_VALUE, TPM_ST } from '../vault/tpm/constants.ts'
import { TpmWriter, encodeSignature, normalizePcrs, parseSignature, signatureToP1363, writePcrSelection } from '../vault/tpm/marshal.ts'
import { pcrCompositeDigest } from '../vault/tpm/templates.ts'
import { importSpki, isP256 } from './keys.ts'

/** The fields of a quote TPMS_ATTEST. */
export interface QuoteAttestFields {
  qualifiedSigner: Uint8Array
  /** The 32-byte handle the evidence is bound to. */
  extraData: Uint8Array
  clock: bigint
  resetCount: number
  restartCount: number
  safe: boolean
  firmwareVersion: bigint
  /** Selected PCR indices of the SHA-256 bank (normalized: sorted, unique). */
  pcrs: readonly number[]
  pcrDigest: Uint8Array
}

/** The TPMS_ATTEST bytes of a quote (type 0x8018) with one SHA-256 PCR bank. */
export function buildQuoteAttest(f: QuoteAttestFields): Uint8Array {
  if (f.qualifiedSigner.length > 66) throw tlError('ERR_INVALID_ARGUMENT', 'qualifiedSigner is at most 66 bytes (a TPM2B_NAME)')
  if (f.extraData.length > 64) throw tlError('ERR_INVALID_ARGUMENT', 'extraData is at most 64 bytes')
  if (f.pcrDigest.length > 64) throw tlError('ERR_INVALID_ARGUMENT', 'pcrDigest is at most 64 bytes')
  const w = new TpmWriter(256)
  w.u32(TPM_GENERATED_VALUE).u16(TPM_ST.ATTEST_QUOTE)
  w.tpm2b(f.qualifiedSigner).tpm2b(f.extraData)
  w.u64(f.clock).u32(f.resetCount).u32(f.restartCount).u8(f.safe ? 1 : 0)
  w.u64(f.firmwareVersion)
  writePcrSelection(w, [{ hashAlg: TPM_ALG.SHA256, pcrs: normalizePcrs(f.pcrs) }])
  w.tpm2b(f.pcrDigest)
  return w.finish()
}

/** The name of a sim AK: `u16 0x000B (SHA-256) ‖ SHA-256(SPKI DER)` (34 bytes). */
export function simAkName(akPubSpkiDer: Uint8Array): Uint8Array {
  const out = new Uint8Array(34)
  out[0] = TPM_ALG.SHA256 >> 8
  out[1] = TPM_ALG.SHA256 & 0xff
  out.set(createHash('sha256').update(akPubSpkiDer).digest(), 2)
  return out
}

/** The composite digest of PCR values given as `[index, value]` in ascending index order. */
export function quotePcrDigest(pcrs: readonly (readonly [number, Uint8Array])[]): Uint8Array {
  return pcrCompositeDigest(pcrs.map(([, v]) => v), TPM_ALG.SHA256)
}

/** Signs TPMS_ATTEST bytes with an ECDSA P-256 key; returns TPMT_SIGNATURE bytes (ECDSA, SHA-256). */
export function signQuoteAttest(attest: Uint8Array, akPrivate: KeyObject): Uint8Array {
  if (!isP256(akPrivate)) throw tlError('ERR_INVALID_ARGUMENT', 'the attestation key must be ECDSA P-256')
  const p1363 = sign('sha256', attest, { key: akPrivate, dsaEncoding: 'ieee-p1363' })
  return encodeSignature({ sigAlg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256, r: new Uint8Array(p1363.subarray(0, 32)), s: new Uint8Array(p1363.subarray(32)) })
}

/**
 * Verifies a TPMT_SIGNATURE (ECDSA P-256 / SHA-256) over TPMS_ATTEST bytes with the AK's SPKI DER.
 * Returns false when the signature does not verify; throws ERR_TPM_MALFORMED for a signature
 * that does not parse and ERR_ATTEST_EVIDENCE for another scheme, hash or key type.
 */
export function verifyQuoteSignature(attest: Uint8Array, tpmtSignature: Uint8Array, akPubSpkiDer: Uint8Array): boolean {
  const sig = parseSignature(tpmtSignature)
  if (sig.sigAlg !== TPM_ALG.ECDSA || sig.hashAlg !== TPM_ALG.SHA256) {
    throw tlError('ERR_ATTEST_EVIDENCE', `quote signature scheme 0x${sig.sigAlg.toString(16)}/hash 0x${sig.hashAlg.toString(16)} is not ECDSA/SHA-256`)
  }
  const key = importSpki(akPubSpkiDer, 'the attestation key')
  if (!isP256(key)) throw tlError('ERR_ATTEST_EVIDENCE', 'the attestation key is not an ECDSA P-256 key')
  return verify('sha256', attest, { key, dsaEncoding: 'ieee-p1363' }, signatureToP1363(sig, 32))
}

/** A problem found by {@link checkQuotePcrs}. */
export interface QuotePcrProblem {
  reason: 'malformed' | 'pcr_digest_mismatch'
  detail: string
}

/**
 * Checks that the reported PCR values are the ones the quote covers: the quote selects exactly
 * one SHA-256 bank whose indices equal the reported indices (ascending), and `pcrDigest` equals
 * the composite digest of the reported values. Returns the problem, or undefined when consistent.
 */
export function checkQuotePcrs(attest: TpmAttest, pcrs: readonly (readonly [number, Uint8Array])[]): QuotePcrProblem | undefined {
  if (attest.quote === undefined) return { reason: 'malformed', detail: 'the TPMS_ATTEST is not a quote' }
  const banks = attest.quote.pcrSelect.filter((s) => s.pcrs.length > 0)
  if (banks.length !== 1 || banks[0]!.hashAlg !== TPM_ALG.SHA256) {
    return { reason: 'malformed', detail: 'the quote must select PCRs of exactly one bank, SHA-256' }
  }
  const selected = banks[0]!.pcrs
  const reported = pcrs.map(([i]) => i)
  if (selected.length !== reported.length || selected.some((p, i) => p !== reported[i])) {
    return { reason: 'pcr_digest_mismatch', detail: `the quote selects PCRs [${selected.join(',')}] but values for [${reported.join(',')}] were reported` }
  }
  const digest = quotePcrDigest(pcrs)
  const quoted = attest.quote.pcrDigest
  if (digest.length !== quoted.length || !digest.every((b, i) => b === quoted[i])) {
    return { reason: 'pcr_digest_mismatch', detail: 'the reported PCR values do not hash to the quoted pcrDigest' }
  }
  return undefined
}
