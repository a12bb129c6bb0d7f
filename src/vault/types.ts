/**
 * Vault interfaces, split by capability (as Ockam's vault traits). They deal in key **handles**
 * (opaque strings), never in secret bytes — with one documented exception: X25519 static keys.
 * TPMs cannot do X25519, and the Noise engine runs synchronously in this process, so a secure
 * channel vault hands the channel a key pair for the life of the channel; at rest, the TPM vault
 * keeps that key only as a TPM-sealed blob.
 *
 * Every operation is async and fails with a typed error (ERR_VAULT_*, ERR_TPM*).
 *
 * @module
 */
import type { KeyPair } from '../channel/crypto/types.ts'
import type { IdentityAlg } from '../channel/identity.ts'

/** Signing keys (identity keys): Ed25519 in software, ECDSA P-256 in a TPM. */
export interface SigningVault {
  /** Generates a signing key and returns its handle. */
  generateSigningKey(alg: IdentityAlg): Promise<string>
  /** Ed25519: 32 bytes. P-256: the 65-byte uncompressed point. */
  signingPublicKey(handle: string): Promise<Uint8Array>
  signingAlgorithm(handle: string): Promise<IdentityAlg>
  /** Ed25519 signs `data`; P-256 signs SHA-256(`data`), IEEE P1363 (r‖s) encoding. */
  sign(handle: string, data: Uint8Array): Promise<Uint8Array>
}

/** X25519 static keys of secure channels. */
export interface SecureChannelVault {
  generateX25519(): Promise<string>
  x25519PublicKey(handle: string): Promise<Uint8Array>
  /** The key pair for the (synchronous) Noise engine; see the module note. */
  x25519KeyPair(handle: string): Promise<KeyPair>
}

/** Sealing of small secrets. */
export interface SealingVault {
  /** Seals `data`; with `pcrs`, only unsealable while those PCRs hold their current values (TPM). */
  seal(data: Uint8Array, options?: { pcrs?: readonly number[] }): Promise<Uint8Array>
  unseal(blob: Uint8Array): Promise<Uint8Array>
}

/** Key management common to all vaults. */
export interface KeyStore {
  /** Handles of all keys held. */
  listKeys(): Promise<string[]>
  deleteKey(handle: string): Promise<void>
  /** Flushes state and releases resources. */
  close(): Promise<void>
}

/** A vault: every capability. A TPM vault adds attestation (quote, certify). */
export interface Vault extends SigningVault, SecureChannelVault, SealingVault, KeyStore {
  readonly kind: 'memory' | 'file' | 'tpm'
}
