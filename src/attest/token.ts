/**
 * Attestation result tokens (passport and background-check results): JWS compact serialization,
 * EdDSA (Ed25519) signed by a verifier key.
 *
 * ```
 * token   = BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(Ed25519(header "." payload))
 * header  = {"alg":"EdDSA","typ":"JWT","kid":<verifier key id>}
 * payload = the AttestationResult as JSON; `nonce` and `keyAttestation.pub` as base64url strings;
 *           iat/exp stay in ms since the epoch (not JWT seconds)
 * ```
 * The key id is hex of the first 16 bytes of SHA-256(SPKI DER of the verifier public key).
 * A token is at most MAX_TOKEN_BYTES; sizes are checked before anything is decoded.
 *
 * Errors of {@link verifyResultToken}: malformed or oversize → ERR_ATTEST_EVIDENCE; unknown kid or
 * bad signature → ERR_ATTEST_VERIFIER_FAILED (details.reason `unknown_issuer` /
 * `bad_token_signature`); iat in the future beyond the skew → ERR_ATTEST_VERIFIER_FAILED
 * (`clock_skew`, "clock skew 60 s > 30 s"); expired beyond the skew → ERR_ATTEST_NO_VALID_RESULT
 * (`expired`).
 *
 * @module
 */
import { createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { tlError } from '../errors.ts'
import { MAX_TOKEN_BYTES } from './constants.ts'
import { ed25519FromSeed, spkiKeyId, spkiOf } from './keys.ts'
import { TIER_RANK, type AttestationResult, type Tier, type TrustVector } from './types.ts'

const B64URL = /^[A-Za-z0-9_-]*$/
const CLAIMS: readonly (keyof TrustVector)[] = ['instanceIdentity', 'configuration', 'executables', 'fileSystem', 'hardware', 'runtimeOpaque', 'storageOpaque', 'sourcedData']

function b64u(b: Uint8Array | string): string {
  return (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.from(b)).toString('base64url')
}

function bad(what: string): never {
  throw tlError('ERR_ATTEST_EVIDENCE', `result token: ${what}`, { details: { reason: 'malformed_token' } })
}

/** What signs result tokens: an Ed25519 private key and its key id. */
export interface ResultSigner {
  kid: string
  privateKey: KeyObject
}

/** A verifier signing key (Ed25519) and its key id. */
export class VerifierKey implements ResultSigner {
  readonly kid: string
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  /** SPKI DER of the public key. */
  readonly publicKeySpki: Uint8Array

  private constructor(privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'ed25519' || privateKey.type !== 'private') throw tlError('ERR_INVALID_ARGUMENT', 'a verifier key is an Ed25519 private key')
    this.privateKey = privateKey
    this.publicKey = createPublicKey(privateKey)
    this.publicKeySpki = spkiOf(this.publicKey)
    this.kid = spkiKeyId(this.publicKeySpki)
  }

  /** A new key (random, or from a 32-byte seed). */
  static generate(seed?: Uint8Array): VerifierKey {
    return new VerifierKey(ed25519FromSeed(seed ?? new Uint8Array(randomBytes(32))))
  }

  /** Wraps an existing Ed25519 private key. */
  static fromPrivateKey(privateKey: KeyObject): VerifierKey {
    return new VerifierKey(privateKey)
  }

  /** Signs a result as a token. */
  sign(result: AttestationResult): string {
    return signResult(result, { kid: this.kid, privateKey: this.privateKey })
  }

  /** `kid → public key`, the shape {@link verifyResultToken} takes. */
  trusted(): Map<string, KeyObject> {
    return new Map([[this.kid, this.publicKey]])
  }
}

/** Signs an attestation result as a JWS compact token (EdDSA). */
export function signResult(result: AttestationResult, key: ResultSigner): string {
  if (key.privateKey.asymmetricKeyType !== 'ed25519') throw tlError('ERR_INVALID_ARGUMENT', 'result tokens are signed with Ed25519 (EdDSA)')
  const payload = { ...result, nonce: b64u(result.nonce), keyAttestation: { ...result.keyAttestation, pub: b64u(result.keyAttestation.pub) } }
  const input = `${b64u(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid: key.kid }))}.${b64u(JSON.stringify(payload))}`
  const token = `${input}.${b64u(sign(null, Buffer.from(input, 'ascii'), key.privateKey))}`
  if (token.length > MAX_TOKEN_BYTES) throw tlError('ERR_ATTEST_EVIDENCE', `the result token would be ${token.length} bytes, over the limit of ${MAX_TOKEN_BYTES}`)
  return token
}

function parseJson(part: string, what: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
  } catch {
    bad(`${what} is not base64url JSON`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(`${what} is not a JSON object`)
  return v as Record<string, unknown>
}

function bytesField(v: unknown, what: string, max: number): Uint8Array {
  if (typeof v !== 'string' || !B64URL.test(v) || v.length > Math.ceil((max * 4) / 3)) bad(`${what} is not base64url of at most ${max} bytes`)
  return new Uint8Array(Buffer.from(v, 'base64url'))
}

function str(v: unknown, what: string, max = 256): string {
  if (typeof v !== 'string' || v.length > max) bad(`${what} is not a string of at most ${max} characters`)
  return v
}

function time(v: unknown, what: string): number {
  if (!Number.isSafeInteger(v)) bad(`${what} is not a time in ms`)
  return v as number
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}

/** Checks the payload's shape and builds the result. */
function payloadToResult(p: Record<string, unknown>): AttestationResult {
  if (p['profile'] !== 'tag:throughline.dev,2026:ear-v1') bad('unknown profile')
  const status = p['status']
  if (typeof status !== 'string' || !(status in TIER_RANK)) bad('status is not a tier')
  const suite = p['suite']
  if (suite !== 'tpm2' && suite !== 'sim') bad('suite is not tpm2 or sim')
  const tvIn = p['trustVector'] as Record<string, unknown> | null
  if (tvIn === null || typeof tvIn !== 'object') bad('trustVector is missing')
  const trustVector = {} as TrustVector
  for (const c of CLAIMS) {
    const v = tvIn[c]
    if (!Number.isInteger(v) || (v as number) < -128 || (v as number) > 127) bad(`trustVector.${c} is not an integer in -128..127`)
    trustVector[c] = v as number
  }
  const ka = p['keyAttestation'] as Record<string, unknown> | null
  if (ka === null || typeof ka !== 'object') bad('keyAttestation is missing')
  const keyAttestation: AttestationResult['keyAttestation'] = { pub: bytesField(ka['pub'], 'keyAttestation.pub', 256) }
  if (ka['identifier'] !== undefined) keyAttestation.identifier = str(ka['identifier'], 'keyAttestation.identifier')
  const out: AttestationResult = {
    profile: 'tag:throughline.dev,2026:ear-v1',
    iat: time(p['iat'], 'iat'),
    exp: time(p['exp'], 'exp'),
    verifierId: str(p['verifierId'], 'verifierId'),
    nonce: bytesField(p['nonce'], 'nonce', 64),
    status: status as Tier,
    trustVector,
    policyId: str(p['policyId'], 'policyId'),
    keyAttestation,
    suite,
  }
  if (p['detail'] !== undefined) out.detail = str(p['detail'], 'detail', 2048)
  if (p['reason'] !== undefined) out.reason = str(p['reason'], 'reason', 64)
  if (p['claims'] !== undefined) {
    const c = p['claims'] as Record<string, unknown> | null
    if (c === null || typeof c !== 'object' || Array.isArray(c)) bad('claims is not an object')
    const claims: Record<string, string | number | boolean> = {}
    for (const [k, v] of Object.entries(c)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') bad(`claim ${k.slice(0, 32)} is not a string, number or boolean`)
      claims[k] = v
    }
    out.claims = claims
  }
  return out
}

/**
 * The result a token carries, checked for shape but NOT for its signature: for the holder of a
 * passport, which needs its own token's iat/exp to know when to refresh it. Relying parties use
 * {@link verifyResultToken}.
 */
export function readResultToken(token: string): AttestationResult {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_BYTES) bad(`not a string of at most ${MAX_TOKEN_BYTES} bytes`)
  const parts = token.split('.')
  if (parts.length !== 3) bad('not a JWS compact serialization (three base64url parts)')
  return payloadToResult(parseJson(parts[1]!, 'payload'))
}

/**
 * Verifies a result token against trusted verifier keys (`kid` → Ed25519 public key) at `now`
 * (ms), tolerating `maxSkewMs` on iat and exp. Returns the result (see the module note for errors).
 */
export function verifyResultToken(token: string, trustedKeys: ReadonlyMap<string, KeyObject>, now: number, maxSkewMs: number): AttestationResult {
  if (typeof token !== 'string') bad('not a string')
  if (token.length > MAX_TOKEN_BYTES) {
    throw tlError('ERR_ATTEST_EVIDENCE', `result token: ${token.length} bytes, over the limit of ${MAX_TOKEN_BYTES}`, { details: { reason: 'oversize_token' } })
  }
  const parts = token.split('.')
  if (parts.length !== 3 || !parts.every((s) => s.length > 0 && B64URL.test(s))) bad('not a JWS compact serialization (three base64url parts)')
  const [h, p, s] = parts as [string, string, string]
  const header = parseJson(h, 'header')
  if (header['alg'] !== 'EdDSA') bad(`alg ${String(header['alg']).slice(0, 16)} is not EdDSA`)
  const kid = str(header['kid'], 'kid', 64)
  const key = trustedKeys.get(kid)
  if (key === undefined) {
    throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the result token is signed by ${kid}, which is not a trusted verifier key`, { details: { reason: 'unknown_issuer', kid } })
  }
  const sig = Buffer.from(s, 'base64url')
  const ok = key.asymmetricKeyType === 'ed25519' && sig.length === 64 && verify(null, Buffer.from(`${h}.${p}`, 'ascii'), key, sig)
  if (!ok) throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the result token signature does not verify under verifier key ${kid}`, { details: { reason: 'bad_token_signature', kid } })
  const result = payloadToResult(parseJson(p, 'payload'))
  if (result.iat - now > maxSkewMs) {
    throw tlError('ERR_ATTEST_VERIFIER_FAILED', `the result token was issued in the future: clock skew ${seconds(result.iat - now)} > ${seconds(maxSkewMs)}`, {
      details: { reason: 'clock_skew', skewMs: result.iat - now, maxSkewMs },
    })
  }
  if (now - result.exp > maxSkewMs) {
    throw tlError('ERR_ATTEST_NO_VALID_RESULT', `the attestation result expired ${new Date(result.exp).toISOString()} (${seconds(now - result.exp)} ago, skew tolerance ${seconds(maxSkewMs)})`, {
      details: { reason: 'expired', exp: result.exp, now },
    })
  }
  return result
}
