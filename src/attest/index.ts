/**
 * Remote attestation for throughline channels: types and the handle rule, evidence encoding,
 * TPM-shaped quotes, the `sim` suite, the verifier (appraisal into EAR-like results) and result
 * tokens.
 *
 * `mintContext` is exported for the secure channel only (@internal): attesters sign nothing but
 * contexts minted from a live handshake (see handle.ts).
 *
 * @module
 */
export * from './types.ts'
export { deriveHandle, roundHashPoint, assertMinted, mintContext } from './handle.ts'
export * from './evidence.ts'
export * from './constants.ts'
export * from './keys.ts'
export * from './quote.ts'
export * from './sim.ts'
export * from './verifier.ts'
export * from './token.ts'
export * from './credential.ts'
export * from './enrol.ts'
// tpm2.ts (the real-TPM attester) is added here by its author.
