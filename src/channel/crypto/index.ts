/**
 * Crypto providers of the secure channel: pick one with {@link getCrypto}.
 *
 * - `node` (default): node:crypto, the fast path on Node.
 * - `portable`: pure JS (@stablelib, @noble/hashes). Browser bundles should import
 *   `./portable.ts` directly, since this module also loads the `node` backend.
 *
 * @module
 */
import { ThroughlineError } from '../../errors.ts'
import { nodeCrypto } from './node.ts'
import { portableCrypto } from './portable.ts'
import type { CryptoProvider, CryptoSpec } from './types.ts'

export type { CryptoPrimitives, CryptoProvider, CryptoSpec, KeyPair } from './types.ts'
export { defineProvider, encodeNonce } from './provider.ts'
export { nodeCrypto, portableCrypto }

/**
 * The crypto provider for `spec`: `'node'` (the default), `'portable'`, or a provider object,
 * which is returned as is. Throws ERR_INVALID_ARGUMENT for anything else.
 */
export function getCrypto(spec: CryptoSpec = 'node'): CryptoProvider {
  if (spec === 'node') return nodeCrypto
  if (spec === 'portable') return portableCrypto
  if (typeof spec === 'object' && spec !== null && typeof spec.dh === 'function' && typeof spec.hkdf === 'function') {
    return spec
  }
  throw new ThroughlineError('ERR_INVALID_ARGUMENT', `unknown crypto provider ${String(spec)}`)
}
