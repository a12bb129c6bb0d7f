/**
 * AK enrolment by credential activation (Keylime's method), on the verifier side.
 *
 * The device sends its EK public and its AK public area (TPM2B_PUBLIC). The verifier checks the AK
 * is a restricted, fixedTPM, fixedParent, sign-only ECDSA P-256 / SHA-256 key generated in a TPM,
 * computes its Name, makes a credential ({@link makeCredential}) for that Name to that EK with a
 * random 32-byte secret, and asks the device to activate it. The TPM releases the secret only when
 * the EK is its own and an object with exactly that Name is loaded in it; the attributes in the
 * Name then say the AK never leaves that TPM. A matching secret (compared in constant time) enrols
 * the AK: its SPKI can go into `trustAnchors.tpmAks` (or {@link Verifier.enrolAk}).
 *
 * **What this proves, and what not.** It binds the AK to the EK. Whether the EK itself belongs to a
 * genuine TPM needs the EK certificate chain (manufacturer CA), which is not checked here: without
 * it the EK public is trusted on first use (record it at the first enrolment and require the same
 * EK afterwards, `expectedEk`). swtpm run without `swtpm_setup` has no EK certificate at all, and
 * swtpm proves protocol correctness only, never silicon.
 *
 * @module
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { isThroughlineError, tlError } from '../errors.ts'
import {
  TPM_ALG,
  TPM_ECC,
  TPMA_OBJECT,
  eccPublicKeyObject,
  eccPublicPoint,
  objectName,
  parsePublic,
  publicArea,
  type EccPublic,
} from '../vault/tpm/index.ts'
import { makeCredential, type Credential } from './credential.ts'

/** Input of {@link enrolAk}. */
export interface EnrolAkRequest {
  /** The device's EK: TPM2B_PUBLIC bytes (preferred: its parameters are checked) or a 65-byte P-256 point. */
  ekPublic: Uint8Array
  /** The AK's TPM2B_PUBLIC bytes (size prefix included), attributes and all: its Name is what the credential binds to. */
  akPublic: Uint8Array
  /** Asks the device to run TPM2_ActivateCredential (AK + EK) on the two TPM2B blobs and returns the secret. */
  activate: (credentialBlob: Uint8Array, encryptedSecret: Uint8Array) => Promise<Uint8Array>
  /** When set (TOFU: the EK recorded at a first enrolment), the EK must be this one (TPM2B_PUBLIC or point). */
  expectedEk?: Uint8Array
}

/** An enrolled AK. */
export interface EnrolledAk {
  /** SPKI DER of the AK's P-256 public key: what `trustAnchors.tpmAks` pins. */
  akSpki: Uint8Array
  /** The AK's Name (`u16 0x000B ‖ SHA-256(TPMT_PUBLIC)`). */
  akName: Uint8Array
  /** The 65-byte uncompressed EK point the AK was bound to (record it: trust on first use). */
  ekPoint: Uint8Array
}

const REQUIRED_AK_ATTRS = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.restricted | TPMA_OBJECT.sign

function refuse(reason: string, message: string, cause?: unknown): never {
  throw tlError('ERR_ATTEST_ENROL_FAILED', message, { details: { reason }, ...(cause === undefined ? {} : { cause }) })
}

/**
 * Checks an AK public area: ECC P-256, nameAlg SHA-256, ECDSA/SHA-256 scheme, no symmetric
 * algorithm, and attributes fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign — and not
 * decrypt. Returns the parsed area; a refusal is `ERR_ATTEST_ENROL_FAILED` (`details.reason` `ak_attributes`).
 */
export function checkAkPublic(akPublic: Uint8Array): EccPublic {
  let p
  try {
    p = parsePublic(akPublic, true)
  } catch (err) {
    refuse('ak_public', 'the AK public area is not a TPM2B_PUBLIC', err)
  }
  if (p.type !== 'ecc') refuse('ak_attributes', 'the AK is not an ECC key')
  if (p.curve !== TPM_ECC.NIST_P256) refuse('ak_attributes', 'the AK is not on NIST P-256')
  if (p.nameAlg !== TPM_ALG.SHA256) refuse('ak_attributes', 'the AK nameAlg is not SHA-256')
  const missing = REQUIRED_AK_ATTRS & ~p.objectAttributes
  if (missing !== 0) {
    const names = Object.entries(TPMA_OBJECT)
      .filter(([, bit]) => (missing & bit) !== 0)
      .map(([n]) => n)
    refuse('ak_attributes', `the AK attributes lack ${names.join(', ')} (an AK must be a restricted, fixedTPM, fixedParent signing key generated in the TPM)`)
  }
  if ((p.objectAttributes & TPMA_OBJECT.decrypt) !== 0) refuse('ak_attributes', 'the AK is also a decryption key (an AK must be sign-only)')
  if (p.symmetric !== null) refuse('ak_attributes', 'the AK has a symmetric algorithm (a signing key has none)')
  if (p.scheme === null || p.scheme.scheme !== TPM_ALG.ECDSA || p.scheme.hashAlg !== TPM_ALG.SHA256) refuse('ak_attributes', 'the AK scheme is not ECDSA with SHA-256')
  return p
}

/**
 * The 65-byte uncompressed P-256 point of an EK given as TPM2B_PUBLIC bytes or as the point itself;
 * `ERR_ATTEST_ENROL_FAILED` (`details.reason` `ek_public`) otherwise.
 */
export function ekPointOf(ek: Uint8Array): Uint8Array {
  if (!(ek instanceof Uint8Array)) refuse('ek_public', 'the EK public must be bytes (TPM2B_PUBLIC or a 65-byte P-256 point)')
  if (ek.length === 65 && ek[0] === 0x04) return ek
  try {
    return eccPublicPoint(ek)
  } catch (err) {
    refuse('ek_public', 'the EK public is neither a TPM2B_PUBLIC nor a 65-byte P-256 point', err)
  }
}

/**
 * Enrols an AK by credential activation (see the module note): checks the AK ({@link checkAkPublic}),
 * makes a credential for its Name to the EK with a fresh random 32-byte secret, calls `activate`,
 * and accepts the AK only when the returned secret matches (constant-time comparison).
 * Failures are `ERR_ATTEST_ENROL_FAILED` with `details.reason`: `ak_public`, `ak_attributes`,
 * `ek_public`, `ek_mismatch`, `activation_failed` (the device or its TPM refused; the cause is
 * attached) or `secret_mismatch`.
 */
export async function enrolAk(req: EnrolAkRequest): Promise<EnrolledAk> {
  if (req === null || typeof req !== 'object' || typeof req.activate !== 'function') throw tlError('ERR_INVALID_ARGUMENT', 'enrolAk: { ekPublic, akPublic, activate } expected')
  if (!(req.ekPublic instanceof Uint8Array) || !(req.akPublic instanceof Uint8Array)) throw tlError('ERR_INVALID_ARGUMENT', 'enrolAk: ekPublic and akPublic must be Uint8Arrays')
  const ekPoint = ekPointOf(req.ekPublic)
  if (req.expectedEk !== undefined) {
    const expected = ekPointOf(req.expectedEk)
    if (expected.length !== ekPoint.length || !timingSafeEqual(expected, ekPoint)) refuse('ek_mismatch', 'the EK is not the one recorded for this device')
  }
  const { akSpki, akName, secret, credential: cred } = startEnrolment(req.ekPublic, req.akPublic)
  let answer: Uint8Array
  try {
    answer = await req.activate(cred.credentialBlob, cred.encryptedSecret)
  } catch (err) {
    refuse('activation_failed', `the device could not activate the credential (its AK is not loaded next to that EK): ${err instanceof Error ? err.message : String(err)}`, err)
  }
  if (!(answer instanceof Uint8Array) || answer.length !== secret.length || !timingSafeEqual(answer, secret)) {
    refuse('secret_mismatch', 'the activated secret does not match the credential')
  }
  return { akSpki, akName, ekPoint: Uint8Array.from(ekPoint) }
}

/** A credential challenge for one AK (see {@link startEnrolment}); keep `secret` to check the answer. */
export interface EnrolmentChallenge extends EnrolledAk {
  /** The fresh random 32-byte secret the credential protects. */
  secret: Uint8Array
  /** What the device passes to TPM2_ActivateCredential. */
  credential: Credential
}

/**
 * The verifier's half of {@link enrolAk} without the round trip (for a service that answers the
 * device in two requests): checks the AK ({@link checkAkPublic}) and the EK, and makes a
 * credential for the AK's Name to that EK with a fresh random 32-byte secret. The caller compares
 * the device's answer with `secret` in constant time ({@link secretMatches}). Refusals are
 * `ERR_ATTEST_ENROL_FAILED` (`ak_public`, `ak_attributes`, `ek_public`).
 */
export function startEnrolment(ekPublic: Uint8Array, akPublic: Uint8Array): EnrolmentChallenge {
  if (!(ekPublic instanceof Uint8Array) || !(akPublic instanceof Uint8Array)) throw tlError('ERR_INVALID_ARGUMENT', 'ekPublic and akPublic must be Uint8Arrays')
  const ak = checkAkPublic(akPublic)
  const ekPoint = ekPointOf(ekPublic)
  const akName = objectName(publicArea(akPublic))
  let akSpki: Uint8Array
  try {
    akSpki = new Uint8Array(eccPublicKeyObject(ak).export({ type: 'spki', format: 'der' }))
  } catch (err) {
    refuse('ak_public', 'the AK public point is not a valid P-256 point', err)
  }
  const secret = new Uint8Array(randomBytes(32))
  let credential: Credential
  try {
    credential = makeCredential(ekPublic, akName, secret)
  } catch (err) {
    if (isThroughlineError(err, 'ERR_INVALID_ARGUMENT')) refuse('ek_public', `the EK cannot receive a credential: ${err.message}`, err)
    throw err
  }
  return { akSpki, akName, ekPoint: Uint8Array.from(ekPoint), secret, credential }
}

/** Constant-time comparison of a device's answer with the credential's secret. */
export function secretMatches(answer: unknown, secret: Uint8Array): boolean {
  return answer instanceof Uint8Array && answer.length === secret.length && timingSafeEqual(answer, secret)
}
