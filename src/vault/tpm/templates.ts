/**
 * TPMT_PUBLIC: encoding and parsing, the object templates throughline uses, object Names,
 * public-key export (65-byte point, node:crypto KeyObject) and offline PolicyPCR digests.
 *
 * Templates (all nameAlg SHA-256, ECC on NIST P-256):
 * - {@link srkTemplate}: the standard ECC storage root key (TCG / go-tpm `ECCSRKTemplate`):
 *   fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|decrypt, AES-128-CFB,
 *   unique = 32 zero bytes for x and y. Deterministic under the owner seed, so it can be re-created.
 * - {@link signingKeyTemplate}: a non-exportable ECDSA/SHA-256 key,
 *   fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|sign (`0x00040072`; with noDA `0x00040472`).
 * - {@link attestationKeyTemplate}: the same, restricted (`0x00050072`), for Quote and Certify.
 * - {@link ekTemplate}: the TCG EK Credential Profile ECC NIST P-256 endorsement key (template L-2):
 *   fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt (`0x000300b2`),
 *   authPolicy PolicySecret(TPM_RH_ENDORSEMENT) ({@link EK_POLICY}), AES-128-CFB, unique = 32
 *   zero bytes for x and y. Created under the endorsement hierarchy; deterministic per TPM.
 * - {@link sealedDataTemplate}: a keyedhash data object, fixedTPM|fixedParent; with an authPolicy
 *   (e.g. {@link policyPcrDigest}) it can only be unsealed through a policy session (no userWithAuth).
 *
 * @module
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto'
import { tlError } from '../../errors.ts'
import { ECC_CURVES, HASH_ALGS, TPM_ALG, TPM_CC, TPM_ECC, TPMA_OBJECT } from './constants.ts'
import { TpmReader, TpmWriter, malformed, normalizePcrs, writePcrSelection, type PcrSelection } from './marshal.ts'

/** TPMT_SYM_DEF_OBJECT (null when the algorithm is TPM_ALG_NULL). */
export interface SymDefObject {
  alg: number
  keyBits: number
  mode: number
}

/** A scheme: TPM_ALG id plus its hash (ECDAA adds a count). null = TPM_ALG_NULL. */
export interface Scheme {
  scheme: number
  hashAlg: number
  count?: number
}

interface PublicBase {
  nameAlg: number
  objectAttributes: number
  authPolicy: Uint8Array
}

/** An ECC public area. */
export interface EccPublic extends PublicBase {
  type: 'ecc'
  symmetric: SymDefObject | null
  scheme: Scheme | null
  curve: number
  kdf: Scheme | null
  x: Uint8Array
  y: Uint8Array
}

/** A keyedhash public area (HMAC key or sealed data object). */
export interface KeyedHashPublic extends PublicBase {
  type: 'keyedhash'
  /** null = TPM_ALG_NULL (a sealed data object); HMAC: hash; XOR: hash + kdf (in `count`). */
  scheme: Scheme | null
  unique: Uint8Array
}

/** The public areas this client understands. */
export type TpmtPublic = EccPublic | KeyedHashPublic

const EMPTY = new Uint8Array(0)

// ---------------------------------------------------------------------------------------------
// Encoding

function writeScheme(w: TpmWriter, s: Scheme | null): void {
  if (s === null) {
    w.u16(TPM_ALG.NULL)
    return
  }
  w.u16(s.scheme).u16(s.hashAlg)
  if (s.scheme === TPM_ALG.ECDAA) w.u16(s.count ?? 0)
}

/** Writes a TPMT_PUBLIC. */
export function writePublic(w: TpmWriter, p: TpmtPublic): void {
  w.u16(p.type === 'ecc' ? TPM_ALG.ECC : TPM_ALG.KEYEDHASH)
  w.u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy)
  if (p.type === 'ecc') {
    if (p.symmetric === null) w.u16(TPM_ALG.NULL)
    else w.u16(p.symmetric.alg).u16(p.symmetric.keyBits).u16(p.symmetric.mode)
    writeScheme(w, p.scheme)
    w.u16(p.curve)
    writeScheme(w, p.kdf)
    w.tpm2b(p.x).tpm2b(p.y)
  } else {
    if (p.scheme === null) w.u16(TPM_ALG.NULL)
    else if (p.scheme.scheme === TPM_ALG.XOR) w.u16(TPM_ALG.XOR).u16(p.scheme.hashAlg).u16(p.scheme.count ?? TPM_ALG.NULL)
    else w.u16(p.scheme.scheme).u16(p.scheme.hashAlg)
    w.tpm2b(p.unique)
  }
}

/** The TPMT_PUBLIC bytes of `p` (what a Name hashes). */
export function encodePublic(p: TpmtPublic): Uint8Array {
  const w = new TpmWriter(128)
  writePublic(w, p)
  return w.finish()
}

// ---------------------------------------------------------------------------------------------
// Parsing

function readScheme(r: TpmReader, field: string, ecc: boolean): Scheme | null {
  const scheme = r.u16(`${field}.scheme`)
  if (scheme === TPM_ALG.NULL) return null
  const hashAlg = r.u16(`${field}.hash`)
  if (ecc && scheme === TPM_ALG.ECDAA) return { scheme, hashAlg, count: r.u16(`${field}.count`) }
  return { scheme, hashAlg }
}

/** Reads a TPMT_PUBLIC (ECC or keyedhash). */
export function readPublic(r: TpmReader): TpmtPublic {
  const type = r.u16('TPMT_PUBLIC.type')
  const nameAlg = r.u16('TPMT_PUBLIC.nameAlg')
  const objectAttributes = r.u32('TPMT_PUBLIC.objectAttributes')
  const authPolicy = r.tpm2b('TPMT_PUBLIC.authPolicy', 64).slice()
  if (type === TPM_ALG.ECC) {
    const symAlg = r.u16('TPMS_ECC_PARMS.symmetric.algorithm')
    const symmetric = symAlg === TPM_ALG.NULL ? null : { alg: symAlg, keyBits: r.u16('symmetric.keyBits'), mode: r.u16('symmetric.mode') }
    const scheme = readScheme(r, 'TPMS_ECC_PARMS.scheme', true)
    const curve = r.u16('TPMS_ECC_PARMS.curveID')
    const kdf = readScheme(r, 'TPMS_ECC_PARMS.kdf', false)
    const x = r.tpm2b('TPMS_ECC_POINT.x', 128).slice()
    const y = r.tpm2b('TPMS_ECC_POINT.y', 128).slice()
    return { type: 'ecc', nameAlg, objectAttributes, authPolicy, symmetric, scheme, curve, kdf, x, y }
  }
  if (type === TPM_ALG.KEYEDHASH) {
    const schemeAlg = r.u16('TPMS_KEYEDHASH_PARMS.scheme')
    let scheme: Scheme | null = null
    if (schemeAlg === TPM_ALG.XOR) scheme = { scheme: schemeAlg, hashAlg: r.u16('xor.hash'), count: r.u16('xor.kdf') }
    else if (schemeAlg !== TPM_ALG.NULL) scheme = { scheme: schemeAlg, hashAlg: r.u16('hmac.hash') }
    const unique = r.tpm2b('TPM2B_DIGEST unique', 64).slice()
    return { type: 'keyedhash', nameAlg, objectAttributes, authPolicy, scheme, unique }
  }
  throw malformed(`${r.what}: public area type 0x${type.toString(16)} is not supported (ECC and keyedhash are)`, { type })
}

/** Parses TPMT_PUBLIC bytes, or TPM2B_PUBLIC bytes (with their u16 size prefix) when `sized`. */
export function parsePublic(bytes: Uint8Array, sized = false): TpmtPublic {
  const r = new TpmReader(bytes, sized ? 'TPM2B_PUBLIC' : 'TPMT_PUBLIC')
  const inner = sized ? new TpmReader(r.tpm2b('TPM2B_PUBLIC'), 'TPM2B_PUBLIC') : r
  const p = readPublic(inner)
  inner.end()
  r.end()
  return p
}

/** The TPMT_PUBLIC bytes inside TPM2B_PUBLIC bytes (checks the size prefix). */
export function publicArea(tpm2bPublic: Uint8Array): Uint8Array {
  const r = new TpmReader(tpm2bPublic, 'TPM2B_PUBLIC')
  const area = r.tpm2b('TPM2B_PUBLIC')
  r.end()
  return area
}

// ---------------------------------------------------------------------------------------------
// Names and hashing

/** Hashes `parts` with the TPM hash algorithm `hashAlg`. */
export function tpmHash(hashAlg: number, ...parts: Uint8Array[]): Uint8Array {
  const h = HASH_ALGS.get(hashAlg)
  if (h === undefined) throw tlError('ERR_INVALID_ARGUMENT', `hash algorithm 0x${hashAlg.toString(16)} is not supported`)
  const hash = createHash(h.name)
  for (const p of parts) hash.update(p)
  return new Uint8Array(hash.digest())
}

/** The Name of an object: `u16 nameAlg ‖ H_nameAlg(TPMT_PUBLIC bytes)`. */
export function objectName(publicAreaBytes: Uint8Array): Uint8Array {
  if (publicAreaBytes.length < 4) throw malformed('a TPMT_PUBLIC is at least 4 bytes')
  const nameAlg = (publicAreaBytes[2]! << 8) | publicAreaBytes[3]!
  const digest = tpmHash(nameAlg, publicAreaBytes)
  const out = new Uint8Array(2 + digest.length)
  out[0] = nameAlg >> 8
  out[1] = nameAlg & 0xff
  out.set(digest, 2)
  return out
}

// ---------------------------------------------------------------------------------------------
// Templates

const P256_UNIQUE_ZERO = new Uint8Array(32)
const BASE_KEY = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth

/** Options of the key templates. */
export interface KeyTemplateOptions {
  /** Set noDA: the key's authorizations do not count towards dictionary-attack lockout. Default false. */
  noDA?: boolean
}

/** The standard ECC P-256 storage root key template (TCG, go-tpm ECCSRKTemplate): attributes 0x00030472. */
export function srkTemplate(): EccPublic {
  return {
    type: 'ecc',
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: BASE_KEY | TPMA_OBJECT.noDA | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt,
    authPolicy: EMPTY,
    symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: null,
    curve: TPM_ECC.NIST_P256,
    kdf: null,
    x: P256_UNIQUE_ZERO,
    y: P256_UNIQUE_ZERO,
  }
}

/**
 * The authPolicy of the TCG EK templates: `PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256, i.e.
 * `SHA-256(SHA-256(0^32 ‖ u32 TPM_CC_PolicySecret ‖ u32 0x4000000B) ‖ policyRef (empty))`.
 */
export const EK_POLICY: Uint8Array = Uint8Array.from(Buffer.from('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa', 'hex'))

/**
 * The TCG EK Credential Profile ECC NIST P-256 EK template (L-2, go-tpm `ECCEKTemplate`):
 * attributes 0x000300b2 (no userWithAuth: the EK is usable only through a policy session that
 * satisfies PolicySecret(TPM_RH_ENDORSEMENT)), restricted decrypt, AES-128-CFB, nameAlg SHA-256.
 */
export function ekTemplate(): EccPublic {
  return {
    type: 'ecc',
    nameAlg: TPM_ALG.SHA256,
    objectAttributes:
      TPMA_OBJECT.fixedTPM |
      TPMA_OBJECT.fixedParent |
      TPMA_OBJECT.sensitiveDataOrigin |
      TPMA_OBJECT.adminWithPolicy |
      TPMA_OBJECT.restricted |
      TPMA_OBJECT.decrypt,
    authPolicy: Uint8Array.from(EK_POLICY),
    symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: null,
    curve: TPM_ECC.NIST_P256,
    kdf: null,
    x: P256_UNIQUE_ZERO,
    y: P256_UNIQUE_ZERO,
  }
}

/** A non-exportable ECDSA P-256 / SHA-256 signing key: attributes 0x00040072 (0x00040472 with noDA). */
export function signingKeyTemplate(options: KeyTemplateOptions = {}): EccPublic {
  return {
    type: 'ecc',
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: BASE_KEY | TPMA_OBJECT.sign | (options.noDA === true ? TPMA_OBJECT.noDA : 0),
    authPolicy: EMPTY,
    symmetric: null,
    scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 },
    curve: TPM_ECC.NIST_P256,
    kdf: null,
    x: EMPTY,
    y: EMPTY,
  }
}

/** A restricted ECDSA P-256 / SHA-256 attestation key for Quote and Certify: 0x00050072 (0x00050472 with noDA). */
export function attestationKeyTemplate(options: KeyTemplateOptions = {}): EccPublic {
  const t = signingKeyTemplate(options)
  t.objectAttributes |= TPMA_OBJECT.restricted
  return t
}

/** Options of {@link sealedDataTemplate}. */
export interface SealedTemplateOptions extends KeyTemplateOptions {
  /** authPolicy (e.g. from {@link policyPcrDigest}). With a policy, userWithAuth is clear: policy only. */
  policy?: Uint8Array
}

/**
 * A sealed data object (keyedhash, scheme NULL). Without a policy it is unsealed with its (empty)
 * password: fixedTPM|fixedParent|userWithAuth; with one: fixedTPM|fixedParent only. The
 * sensitive data goes in TPM2B_SENSITIVE_CREATE.data at Create (at most 128 bytes).
 */
export function sealedDataTemplate(options: SealedTemplateOptions = {}): KeyedHashPublic {
  const policy = options.policy ?? EMPTY
  let attrs = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent
  if (policy.length === 0) attrs |= TPMA_OBJECT.userWithAuth
  if (options.noDA === true) attrs |= TPMA_OBJECT.noDA
  return { type: 'keyedhash', nameAlg: TPM_ALG.SHA256, objectAttributes: attrs, authPolicy: policy, scheme: null, unique: EMPTY }
}

// ---------------------------------------------------------------------------------------------
// Public keys

function eccPublicOf(pub: TpmtPublic | Uint8Array): EccPublic {
  const p = pub instanceof Uint8Array ? parsePublic(pub, true) : pub
  if (p.type !== 'ecc') throw tlError('ERR_INVALID_ARGUMENT', 'the object is not an ECC key')
  return p
}

function padTo(v: Uint8Array, size: number, what: string): Uint8Array {
  let i = 0
  while (i < v.length && v[i] === 0 && v.length - i > size) i++
  const t = v.subarray(i)
  if (t.length > size || t.length === 0) throw malformed(`ECC point ${what} is ${v.length} bytes, expected up to ${size}`)
  const out = new Uint8Array(size)
  out.set(t, size - t.length)
  return out
}

/**
 * The public point of an ECC key, uncompressed (`0x04 ‖ x ‖ y`, 65 bytes for P-256). Accepts a
 * parsed public area or TPM2B_PUBLIC bytes (the blob form returned by Create, Load, ReadPublic).
 */
export function eccPublicPoint(pub: TpmtPublic | Uint8Array): Uint8Array {
  const p = eccPublicOf(pub)
  const curve = ECC_CURVES.get(p.curve)
  if (curve === undefined) throw tlError('ERR_INVALID_ARGUMENT', `ECC curve 0x${p.curve.toString(16)} is not supported`)
  const out = new Uint8Array(1 + 2 * curve.size)
  out[0] = 0x04
  out.set(padTo(p.x, curve.size, 'x'), 1)
  out.set(padTo(p.y, curve.size, 'y'), 1 + curve.size)
  return out
}

/** The ECC public key as a node:crypto KeyObject (imported as a JWK), e.g. for `crypto.verify`. Same inputs as {@link eccPublicPoint}. */
export function eccPublicKeyObject(pub: TpmtPublic | Uint8Array): KeyObject {
  const p = eccPublicOf(pub)
  const curve = ECC_CURVES.get(p.curve)
  if (curve === undefined) throw tlError('ERR_INVALID_ARGUMENT', `ECC curve 0x${p.curve.toString(16)} is not supported`)
  const point = eccPublicPoint(p)
  const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64url')
  try {
    return createPublicKey({
      key: { kty: 'EC', crv: curve.jwk, x: b64(point.subarray(1, 1 + curve.size)), y: b64(point.subarray(1 + curve.size)) },
      format: 'jwk',
    })
  } catch (err) {
    throw malformed(`the ECC public point is not on ${curve.jwk}`, { cause: String(err) })
  }
}

// ---------------------------------------------------------------------------------------------
// Policies

/** H(concat of PCR values), the PCR composite digest of a quote and of PolicyPCR. */
export function pcrCompositeDigest(values: readonly Uint8Array[], hashAlg: number = TPM_ALG.SHA256): Uint8Array {
  return tpmHash(hashAlg, ...values)
}

/**
 * The policy digest after `TPM2_PolicyPCR` over `pcrs` holding `values`, computed offline (no trial
 * session): `H(previous ‖ u32 TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ H(concat PCR values))`.
 *
 * `pcrs` is sorted ascending; `values` gives each PCR's value, either as a map by index or as an
 * array in ascending PCR order. `previous` is the policy digest so far (default all zero).
 */
export function policyPcrDigest(
  pcrs: readonly number[],
  values: ReadonlyMap<number, Uint8Array> | readonly Uint8Array[],
  options: { pcrHashAlg?: number; policyHashAlg?: number; previous?: Uint8Array } = {},
): Uint8Array {
  const sorted = normalizePcrs(pcrs)
  if (sorted.length === 0) throw tlError('ERR_INVALID_ARGUMENT', 'a PCR policy needs at least one PCR')
  const pcrHashAlg = options.pcrHashAlg ?? TPM_ALG.SHA256
  const policyHashAlg = options.policyHashAlg ?? TPM_ALG.SHA256
  const pcrSize = HASH_ALGS.get(pcrHashAlg)?.size
  const policySize = HASH_ALGS.get(policyHashAlg)?.size
  if (pcrSize === undefined || policySize === undefined) throw tlError('ERR_INVALID_ARGUMENT', 'unsupported hash algorithm')
  const ordered = sorted.map((p, i) => {
    const v = values instanceof Map ? values.get(p) : (values as readonly Uint8Array[])[i]
    if (v === undefined || v.length !== pcrSize) throw tlError('ERR_INVALID_ARGUMENT', `no ${pcrSize}-byte value for PCR ${p}`)
    return v
  })
  const previous = options.previous ?? new Uint8Array(policySize)
  if (previous.length !== policySize) throw tlError('ERR_INVALID_ARGUMENT', `the previous policy digest must be ${policySize} bytes`)
  const w = new TpmWriter(128)
  w.bytes(previous).u32(TPM_CC.PolicyPCR)
  const selection: PcrSelection[] = [{ hashAlg: pcrHashAlg, pcrs: sorted }]
  writePcrSelection(w, selection)
  w.bytes(pcrCompositeDigest(ordered, policyHashAlg))
  return tpmHash(policyHashAlg, w.finish())
}
