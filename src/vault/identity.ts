/**
 * An identity whose signing key lives in a vault (software or TPM): it signs key bindings through
 * the vault's handle and never sees the secret.
 *
 * @module
 */
import { type IdentityAlg, type IdentitySigner, identifierOf } from '../channel/identity.ts'
import type { SigningVault } from './types.ts'

export interface VaultIdentity extends IdentitySigner {
  readonly identifier: string
  readonly handle: string
}

/** The identity of the signing key `handle` in `vault`. */
export async function vaultIdentity(vault: SigningVault, handle: string): Promise<VaultIdentity> {
  const alg: IdentityAlg = await vault.signingAlgorithm(handle)
  const publicKey = await vault.signingPublicKey(handle)
  return {
    alg,
    publicKey,
    handle,
    identifier: identifierOf(alg, publicKey),
    sign: (data) => vault.sign(handle, data),
  }
}
