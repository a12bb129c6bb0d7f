/**
 * TPM2_MakeCredential on the verifier side, in pure node:crypto (TPM 2.0 Library Part 1 §24
 * "Credential Protection", Annex C.6 "Secret sharing" for ECC; Part 3 §12.6 MakeCredential).
 *
 * A credential is a secret encrypted so that only the TPM holding the EK can recover it, and only
 * for a loaded object whose Name is the one the credential was made for (TPM2_ActivateCredential).
 * An AK that returns the secret is therefore in the same TPM as the EK.
 *
 * For an ECC EK (nameAlg SHA-256, AES-128-CFB — the TCG P-256 EK):
 * ```
 * (de, Qe)   ephemeral P-256 key pair;  Z = x-coordinate of de·Q_EK
 * seed       = KDFe(SHA-256, Z, "IDENTITY", Qe.x, Q_EK.x, 256)
 * symKey     = KDFa(SHA-256, seed, "STORAGE", akName, ∅, 128)
 * hmacKey    = KDFa(SHA-256, seed, "INTEGRITY", ∅, ∅, 256)
 * encIdentity = AES-128-CFB(symKey, IV = 0¹²⁸, TPM2B(secret))
 * outerHMAC  = HMAC-SHA-256(hmacKey, encIdentity ‖ akName)
 * credentialBlob  = TPM2B_ID_OBJECT( TPM2B_DIGEST(outerHMAC) ‖ encIdentity )
 * encryptedSecret = TPM2B_ENCRYPTED_SECRET( TPMS_ECC_POINT(Qe) )
 * ```
 * KDFa is SP 800-108 counter mode with HMAC: `HMAC(key, u32 i ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ u32 bits)`
 * for i = 1, 2, …; KDFe is SP 800-56A concatenation: `H(u32 i ‖ Z ‖ label ‖ 0x00 ‖ partyU ‖ partyV)`.
 * The label is written with its terminating NUL (added when missing, as the reference
 * implementation does); a bit count that is not a multiple of 8 masks the top of the first byte.
 *
 * @module
 */
import { createCipheriv, createECDH, createHash, createHmac } from 'node:crypto'
import { tlError } from '../errors.ts'
import {
  HASH_ALGS,
  TPM_ALG,
  TPM_ECC,
  TPMA_OBJECT,
  TpmWriter,
  parsePublic,
  type EccPublic,
} from '../vault/tpm/index.ts'

/** The output of {@link makeCredential}: the two TPM2B blobs TPM2_ActivateCredential takes (size prefixes included). */
export interface Credential {
  /** TPM2B_ID_OBJECT: `u16 size ‖ TPM2B_DIGEST(integrityHMAC) ‖ encIdentity`. */
  credentialBlob: Uint8Array
  /** TPM2B_ENCRYPTED_SECRET: `u16 size ‖ TPMS_ECC_POINT` of the ephemeral key. */
  encryptedSecret: Uint8Array
}

const u32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n >>> 0)
  return b
}

/** The label's bytes with one terminating NUL (the spec's convention: a NUL is appended unless the label ends with one). */
function labelBytes(label: string | Uint8Array): Uint8Array {
  const l = typeof label === 'string' ? new Uint8Array(Buffer.from(label, 'utf8')) : label
  if (l.length > 0 && l[l.length - 1] === 0) return l
  const out = new Uint8Array(l.length + 1)
  out.set(l)
  return out
}

function hashInfo(hashAlg: number): { name: string; size: number } {
  const h = HASH_ALGS.get(hashAlg)
  if (h === undefined) throw tlError('ERR_INVALID_ARGUMENT', `hash algorithm 0x${hashAlg.toString(16)} is not supported`)
  return h
}

function checkBits(bits: number): void {
  if (!Number.isSafeInteger(bits) || bits <= 0 || bits > 0xffff * 8) throw tlError('ERR_INVALID_ARGUMENT', `KDF: bits must be a positive integer, not ${String(bits)}`)
}

/** Trims `bytes` to `bits` bits: the leading bytes, with the excess high-order bits of the first byte cleared. */
function trimBits(buf: Uint8Array, bits: number): Uint8Array {
  const out = buf.slice(0, Math.ceil(bits / 8))
  if (bits % 8 !== 0) out[0]! &= (1 << bits % 8) - 1
  return out
}

/** The first `bits` bits of `block(1) ‖ block(2) ‖ …`, each block one `hashAlg` output (KDFa and KDFe). */
function counterMode(hashAlg: number, bits: number, block: (hashName: string, i: number) => Uint8Array): Uint8Array {
  const h = hashInfo(hashAlg)
  checkBits(bits)
  const bytes = Math.ceil(bits / 8)
  const out = new Uint8Array(Math.ceil(bytes / h.size) * h.size)
  for (let i = 1, off = 0; off < bytes; i++, off += h.size) out.set(block(h.name, i), off)
  return trimBits(out, bits)
}

/**
 * KDFa (TPM 2.0 Part 1 §11.4.10.2, SP 800-108 counter mode, HMAC PRF):
 * `K(i) = HMAC_hash(key, u32 i ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ u32 bits)`, i = 1, 2, …;
 * the output is the first `bits` bits of `K(1) ‖ K(2) ‖ …`.
 */
export function kdfa(
  hashAlg: number,
  key: Uint8Array,
  label: string | Uint8Array,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Uint8Array {
  const l = labelBytes(label)
  return counterMode(hashAlg, bits, (name, i) => createHmac(name, key).update(u32(i)).update(l).update(contextU).update(contextV).update(u32(bits)).digest())
}

/**
 * KDFe (TPM 2.0 Part 1 §11.4.10.3, SP 800-56A concatenation KDF):
 * `K(i) = H(u32 i ‖ Z ‖ label ‖ 0x00 ‖ partyUInfo ‖ partyVInfo)`, i = 1, 2, …; the output is the
 * first `bits` bits of `K(1) ‖ K(2) ‖ …`. For ECC secret sharing, Z is the x-coordinate of the
 * shared point, partyUInfo the ephemeral key's x and partyVInfo the recipient key's x.
 */
export function kdfe(
  hashAlg: number,
  z: Uint8Array,
  label: string | Uint8Array,
  partyUInfo: Uint8Array,
  partyVInfo: Uint8Array,
  bits: number,
): Uint8Array {
  const l = labelBytes(label)
  return counterMode(hashAlg, bits, (name, i) => createHash(name).update(u32(i)).update(z).update(l).update(partyUInfo).update(partyVInfo).digest())
}

/** What {@link makeCredential} needs of the EK. */
interface EkParams {
  point: Uint8Array
  nameAlg: number
  symBits: number
}

/**
 * Reads an EK: TPM2B_PUBLIC bytes (the standard ECC P-256 EK: restricted decrypt, AES-128-CFB,
 * nameAlg SHA-256), a parsed ECC public area, or a bare 65-byte uncompressed P-256 point (then the
 * TCG EK parameters — SHA-256, AES-128-CFB — are assumed).
 */
function ekParams(ek: Uint8Array | EccPublic): EkParams {
  if (ek instanceof Uint8Array && ek.length === 65 && ek[0] === 0x04) return { point: ek, nameAlg: TPM_ALG.SHA256, symBits: 128 }
  let p: EccPublic
  if (ek instanceof Uint8Array) {
    const parsed = (() => {
      try {
        return parsePublic(ek, true)
      } catch (err) {
        throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK is neither a TPM2B_PUBLIC nor a 65-byte P-256 point', { cause: err })
      }
    })()
    if (parsed.type !== 'ecc') throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK is not an ECC key (only ECC P-256 EKs are supported)')
    p = parsed
  } else {
    p = ek
  }
  if (p.type !== 'ecc' || p.curve !== TPM_ECC.NIST_P256) throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: only ECC NIST P-256 EKs are supported')
  const need = TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt
  if ((p.objectAttributes & need) !== need || (p.objectAttributes & TPMA_OBJECT.sign) !== 0) {
    throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK is not a restricted decryption (storage) key')
  }
  if (p.symmetric === null || p.symmetric.alg !== TPM_ALG.AES || p.symmetric.mode !== TPM_ALG.CFB || ![128, 192, 256].includes(p.symmetric.keyBits)) {
    throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK symmetric algorithm must be AES-CFB')
  }
  if (p.nameAlg !== TPM_ALG.SHA256) throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK nameAlg must be SHA-256')
  if (p.x.length !== 32 || p.y.length !== 32) throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK point must have 32-byte coordinates')
  const point = new Uint8Array(65)
  point[0] = 0x04
  point.set(p.x, 1)
  point.set(p.y, 33)
  return { point, nameAlg: p.nameAlg, symBits: p.symmetric.keyBits }
}

/** Options of {@link makeCredential} (for tests: a fixed ephemeral private key gives a fixed output). */
export interface MakeCredentialOptions {
  /** The ephemeral P-256 private scalar (32 bytes). Default: a fresh random key. */
  ephemeralPrivateKey?: Uint8Array
}

/**
 * TPM2_MakeCredential without a TPM: protects `secret` (1–32 bytes) to the EK `ekPublic` for the
 * object whose Name is `akName` (`u16 nameAlg ‖ digest`, e.g. `objectName(publicArea(akPublic))`).
 * Only `TPM2_ActivateCredential(activateHandle = that object, keyHandle = that EK)` recovers it.
 */
export function makeCredential(ekPublic: Uint8Array | EccPublic, akName: Uint8Array, secret: Uint8Array, options: MakeCredentialOptions = {}): Credential {
  const ek = ekParams(ekPublic)
  const h = hashInfo(ek.nameAlg)
  if (!(akName instanceof Uint8Array) || akName.length < 2 || akName.length > 2 + 64) throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: akName must be a TPM Name (u16 nameAlg ‖ digest)')
  const nameAlg = (akName[0]! << 8) | akName[1]!
  const nameHash = HASH_ALGS.get(nameAlg)
  if (nameHash === undefined || akName.length !== 2 + nameHash.size) throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: akName is not u16 nameAlg ‖ digest of a supported hash')
  if (!(secret instanceof Uint8Array) || secret.length === 0 || secret.length > h.size) {
    throw tlError('ERR_INVALID_ARGUMENT', `makeCredential: the secret must be 1 to ${h.size} bytes`)
  }

  // Secret sharing (Part 1 C.6.4): ephemeral ECDH with the EK, seed = KDFe(Z, "IDENTITY", Qe.x, Qs.x).
  const ecdh = createECDH('prime256v1')
  if (options.ephemeralPrivateKey !== undefined) ecdh.setPrivateKey(options.ephemeralPrivateKey)
  else ecdh.generateKeys()
  const qe = new Uint8Array(ecdh.getPublicKey())
  let z: Uint8Array
  try {
    z = new Uint8Array(ecdh.computeSecret(ek.point))
  } catch (err) {
    throw tlError('ERR_INVALID_ARGUMENT', 'makeCredential: the EK point is not on P-256', { cause: err })
  }
  const qeX = qe.subarray(1, 33)
  const seed = kdfe(ek.nameAlg, z, 'IDENTITY', qeX, ek.point.subarray(1, 33), h.size * 8)

  // Credential protection (Part 1 §24.4–24.5).
  const symKey = kdfa(ek.nameAlg, seed, 'STORAGE', akName, new Uint8Array(0), ek.symBits)
  const hmacKey = kdfa(ek.nameAlg, seed, 'INTEGRITY', new Uint8Array(0), new Uint8Array(0), h.size * 8)
  const plain = new TpmWriter(2 + secret.length).tpm2b(secret).finish()
  const cipher = createCipheriv(`aes-${ek.symBits}-cfb`, symKey, new Uint8Array(16))
  const encIdentity = new Uint8Array(Buffer.concat([cipher.update(plain), cipher.final()]))
  const outerHmac = new Uint8Array(createHmac(h.name, hmacKey).update(encIdentity).update(akName).digest())

  const credentialBlob = new TpmWriter(4 + outerHmac.length + encIdentity.length).sized((w) => w.tpm2b(outerHmac).bytes(encIdentity)).finish()
  const encryptedSecret = new TpmWriter(70).sized((w) => w.tpm2b(qeX).tpm2b(qe.subarray(33, 65))).finish()
  return { credentialBlob, encryptedSecret }
}
