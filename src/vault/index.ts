/**
 * Vaults: capability-split interfaces dealing in key handles, and the software vault (memory or
 * an encrypted file). The TPM 2.0 vault lives in `./tpm/`.
 *
 * @module
 */
export * from './types.ts'
export * from './software.ts'
export * from './identity.ts'
export * from './tpm-vault.ts'
export * from './tpm-identity.ts'
export * as tpm from './tpm/index.ts'
