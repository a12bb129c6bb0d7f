/**
 * Secure channels: the Noise XX engine, crypto providers, identities, trust policies and the
 * channel workers; plus the `/secure/NAME` route directive.
 *
 * @module
 */
import { registerRouteProtocol } from '../router/route.ts'

export * from './noise.ts'
export * from './constants.ts'
export { getCrypto } from './crypto/index.ts'
export { ReplayWindow } from './replay-window.ts'
export * from './identity.ts'
export * from './trust.ts'
export { CLOSE_CAUSE, type CloseCause, PROLOGUE } from './messages.ts'
export { Session } from './session.ts'
export * from './secure-channel.ts'
export { resolveRoute } from './resolve.ts'
export { type AttestationOptions, type AppraisalRequest, type EvidenceAppraiser, type PassportSource, checkResult } from './attestation.ts'

// `/secure/NAME` in route text: open a secure channel to the listener NAME at the route so far.
registerRouteProtocol({
  keyword: 'secure',
  arity: 1,
  parse: (value) => {
    if (!/^[^/\s#]+$/.test(value)) throw new Error(`"${value}" is not a listener name`)
    return { kind: 'directive', keyword: 'secure', value }
  },
})
