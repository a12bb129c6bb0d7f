/**
 * TPM 2.0 constants used by throughline's own TPM client (TPM 2.0 Library, Part 2).
 * Only the subset the client speaks; values are checked against the spec tables and go-tpm.
 *
 * @module
 */

/** Structure tags (TPM_ST). */
export const TPM_ST = {
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  CREATION: 0x8021,
  HASHCHECK: 0x8024,
} as const

/** Command codes (TPM_CC) of the commands this client sends. */
export const TPM_CC = {
  EvictControl: 0x120,
  CreatePrimary: 0x131,
  Startup: 0x144,
  Shutdown: 0x145,
  ActivateCredential: 0x147,
  Certify: 0x148,
  NV_Read: 0x14e,
  PolicySecret: 0x151,
  Create: 0x153,
  Load: 0x157,
  Quote: 0x158,
  Sign: 0x15d,
  Unseal: 0x15e,
  FlushContext: 0x165,
  NV_ReadPublic: 0x169,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  GetCapability: 0x17a,
  GetRandom: 0x17b,
  PCR_Read: 0x17e,
  PolicyPCR: 0x17f,
  PCR_Extend: 0x182,
  PolicyGetDigest: 0x189,
} as const

/** Command code → `TPM2_<name>`, for messages. */
export function commandName(cc: number): string {
  for (const [name, value] of Object.entries(TPM_CC)) if (value === cc) return `TPM2_${name}`
  return `TPM2_CC_0x${cc.toString(16)}`
}

/** Algorithm ids (TPM_ALG). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  MGF1: 0x0007,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  RSASSA: 0x0014,
  RSAPSS: 0x0016,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  CFB: 0x0043,
} as const

/** Hash algorithm id → node:crypto name and digest size. */
export const HASH_ALGS: ReadonlyMap<number, { name: string; size: number }> = new Map([
  [TPM_ALG.SHA1, { name: 'sha1', size: 20 }],
  [TPM_ALG.SHA256, { name: 'sha256', size: 32 }],
  [TPM_ALG.SHA384, { name: 'sha384', size: 48 }],
  [TPM_ALG.SHA512, { name: 'sha512', size: 64 }],
])

/** ECC curve ids (TPM_ECC_CURVE) with their JWK name and coordinate size. */
export const TPM_ECC = {
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
} as const

export const ECC_CURVES: ReadonlyMap<number, { jwk: 'P-256' | 'P-384' | 'P-521'; size: number }> = new Map([
  [TPM_ECC.NIST_P256, { jwk: 'P-256', size: 32 }],
  [TPM_ECC.NIST_P384, { jwk: 'P-384', size: 48 }],
  [TPM_ECC.NIST_P521, { jwk: 'P-521', size: 66 }],
])

/** Permanent and special handles (TPM_RH, TPM_RS). */
export const TPM_RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  /** The password authorization session. */
  PW: 0x40000009,
  LOCKOUT: 0x4000000a,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
} as const

/** Handle types (the top byte of a handle), as GetCapability(HANDLES) properties. */
export const TPM_HT = {
  PCR: 0x00000000,
  NV_INDEX: 0x01000000,
  HMAC_SESSION: 0x02000000,
  POLICY_SESSION: 0x03000000,
  PERMANENT: 0x40000000,
  TRANSIENT: 0x80000000,
  PERSISTENT: 0x81000000,
} as const

/** Capabilities (TPM_CAP). */
export const TPM_CAP = {
  ALGS: 0,
  HANDLES: 1,
  COMMANDS: 2,
  PCRS: 5,
  TPM_PROPERTIES: 6,
  ECC_CURVES: 8,
} as const

/** TPM properties (TPM_PT) of TPM_CAP_TPM_PROPERTIES used here. */
export const TPM_PT = {
  /** Fixed: the largest command the TPM accepts. */
  MAX_COMMAND_SIZE: 0x11e,
  /** Fixed: the largest response the TPM sends. */
  MAX_RESPONSE_SIZE: 0x11f,
  /** Variable: authorization failures counted towards dictionary-attack lockout. */
  LOCKOUT_COUNTER: 0x20e,
  /** Variable: failures before lockout. */
  MAX_AUTH_FAIL: 0x20f,
} as const

/** Startup / Shutdown types (TPM_SU). */
export const TPM_SU = { CLEAR: 0, STATE: 1 } as const

/** Session types (TPM_SE). */
export const TPM_SE = { HMAC: 0x00, POLICY: 0x01, TRIAL: 0x03 } as const

/** Session attribute bits (TPMA_SESSION). */
export const TPMA_SESSION = { continueSession: 0x01 } as const

/** Object attribute bits (TPMA_OBJECT). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const

/** NV index attribute bits (TPMA_NV) used to pick the read authorization. */
export const TPMA_NV = {
  ownerRead: 1 << 17,
  authRead: 1 << 18,
  written: 1 << 29,
} as const

/** NV indices of EK certificates (TCG EK Credential Profile): RSA 2048, ECC NIST P-256 (low range). */
export const EK_CERT_NV = { RSA2048: 0x01c00002, ECC_P256: 0x01c0000a } as const

/** TPMS_ATTEST.magic. */
export const TPM_GENERATED_VALUE = 0xff544347

/** PCRs of a PC-client TPM, and the size of a PCR bitmap for them. */
export const PCR_COUNT = 24
export const PCR_SELECT_SIZE = 3

/** Sizes: a command or response is at most this by default (MAX_COMMAND_SIZE / MAX_RESPONSE_SIZE). */
export const TPM_MAX_RESPONSE_SIZE = 4096
export const TPM_MAX_COMMAND_SIZE = 4096
/** MAX_SYM_DATA: the largest secret a keyedhash object can seal. */
export const TPM_MAX_SYM_DATA = 128
/** Response header: tag u16, size u32, responseCode u32. */
export const TPM_HEADER_SIZE = 10
