/**
 * Trust policies: who a secure channel accepts at the other end, decided once the handshake has
 * authenticated the peer's identity. Refusal is a typed error (ERR_TRUST_POLICY) on both ends.
 *
 * @module
 */
import { tlError } from '../errors.ts'
import { isIdentifier } from './identity.ts'

/** What a policy sees of the peer. */
export interface PeerIdentity {
  /** `I` + 40 hex digits. */
  identifier: string
  alg: string
  /** Attributes from credentials or attestation (later layers fill these). */
  attributes: Readonly<Record<string, unknown>>
}

/** A trust policy: true to accept the peer. It may be async (e.g. ask a directory). */
export type TrustPolicy = ((peer: PeerIdentity) => boolean | Promise<boolean>) & { readonly description?: string }

function named(description: string, f: (peer: PeerIdentity) => boolean | Promise<boolean>): TrustPolicy {
  return Object.assign(f, { description })
}

/** Accepts any authenticated identity. */
export function trustAny(): TrustPolicy {
  return named('any authenticated identity', () => true)
}

/** Accepts only the listed identifiers. */
export function trustIdentifiers(ids: Iterable<string>): TrustPolicy {
  const set = new Set<string>()
  for (const id of ids) {
    if (!isIdentifier(id)) throw tlError('ERR_INVALID_ARGUMENT', `"${id}" is not an identifier (I followed by 40 hex digits)`)
    set.add(id)
  }
  return named(`one of ${set.size} identifiers`, (peer) => set.has(peer.identifier))
}

/** Accepts when `predicate` says so. */
export function trustPredicate(predicate: (peer: PeerIdentity) => boolean | Promise<boolean>, description = 'a custom predicate'): TrustPolicy {
  return named(description, predicate)
}

/** Accepts when every policy accepts. */
export function trustAll(...policies: TrustPolicy[]): TrustPolicy {
  return named(policies.map((p) => p.description ?? 'policy').join(' and '), async (peer) => {
    for (const p of policies) if (!(await p(peer))) return false
    return true
  })
}
