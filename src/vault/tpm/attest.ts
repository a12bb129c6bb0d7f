/**
 * TPMS_ATTEST parsing (the signed body of TPM2_Quote and TPM2_Certify), with bounds checks.
 *
 * `TPMS_ATTEST = u32 magic (0xFF544347) ‖ u16 type ‖ TPM2B_NAME qualifiedSigner ‖ TPM2B_DATA extraData
 *   ‖ TPMS_CLOCK_INFO { u64 clock ‖ u32 resetCount ‖ u32 restartCount ‖ u8 safe } ‖ u64 firmwareVersion
 *   ‖ attested`, where attested is, for a quote (0x8018), `TPML_PCR_SELECTION ‖ TPM2B_DIGEST pcrDigest`,
 * and for certify (0x8017), `TPM2B_NAME name ‖ TPM2B_NAME qualifiedName`.
 *
 * The signature covers the raw TPMS_ATTEST bytes, hashed with the signing scheme's hash.
 * A wrong magic, an unknown type, a short body or trailing bytes is `ERR_TPM_MALFORMED`.
 *
 * @module
 */
import { TPM_GENERATED_VALUE, TPM_ST } from './constants.ts'
import { TpmReader, malformed, readPcrSelection, type PcrSelection } from './marshal.ts'

/** TPMS_CLOCK_INFO. */
export interface ClockInfo {
  /** Milliseconds the TPM has been powered (advances only while powered), as a bigint. */
  clock: bigint
  resetCount: number
  restartCount: number
  /** Whether the clock value is known not to have rolled back (TPMI_YES_NO). */
  safe: boolean
}

/** A parsed TPMS_ATTEST. */
export interface TpmAttest {
  magic: number
  type: number
  qualifiedSigner: Uint8Array
  extraData: Uint8Array
  clockInfo: ClockInfo
  firmwareVersion: bigint
  /** For TPM_ST_ATTEST_QUOTE. */
  quote?: { pcrSelect: PcrSelection[]; pcrDigest: Uint8Array }
  /** For TPM_ST_ATTEST_CERTIFY. */
  certify?: { name: Uint8Array; qualifiedName: Uint8Array }
}

/** Parses a TPMS_ATTEST of type quote or certify. */
export function parseAttest(bytes: Uint8Array): TpmAttest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST')
  const magic = r.u32('magic')
  if (magic !== TPM_GENERATED_VALUE) {
    throw malformed(`TPMS_ATTEST: magic is 0x${magic.toString(16)}, not TPM_GENERATED_VALUE 0xff544347`, { magic })
  }
  const type = r.u16('type')
  if (type !== TPM_ST.ATTEST_QUOTE && type !== TPM_ST.ATTEST_CERTIFY) {
    throw malformed(`TPMS_ATTEST: type 0x${type.toString(16)} is neither quote (0x8018) nor certify (0x8017)`, { type })
  }
  const qualifiedSigner = r.tpm2b('qualifiedSigner', 66).slice()
  const extraData = r.tpm2b('extraData', 64).slice()
  const clock = r.u64('clockInfo.clock')
  const resetCount = r.u32('clockInfo.resetCount')
  const restartCount = r.u32('clockInfo.restartCount')
  const safeByte = r.u8('clockInfo.safe')
  if (safeByte > 1) throw malformed(`TPMS_ATTEST: clockInfo.safe is ${safeByte}, not 0 or 1`)
  const firmwareVersion = r.u64('firmwareVersion')
  const out: TpmAttest = {
    magic,
    type,
    qualifiedSigner,
    extraData,
    clockInfo: { clock, resetCount, restartCount, safe: safeByte === 1 },
    firmwareVersion,
  }
  if (type === TPM_ST.ATTEST_QUOTE) {
    const pcrSelect = readPcrSelection(r, 'attested.quote.pcrSelect')
    const pcrDigest = r.tpm2b('attested.quote.pcrDigest', 64).slice()
    out.quote = { pcrSelect, pcrDigest }
  } else {
    const name = r.tpm2b('attested.certify.name', 66).slice()
    const qualifiedName = r.tpm2b('attested.certify.qualifiedName', 66).slice()
    out.certify = { name, qualifiedName }
  }
  r.end()
  return out
}
