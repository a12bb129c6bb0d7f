/**
 * Attestation types shared by attesters, verifiers and the secure channel: evidence, event logs,
 * attestation results (EAR-like) and the attester interface.
 *
 * Design: `docs/attestation.md` (fields, handle rule, models, causes).
 *
 * ## Evidence body (formats `tpm2-quote-v1` and `sim-tpm2-v1`)
 * Both formats carry **byte-exact TPM 2.0 structures**, so one verifier code path appraises both:
 * ```
 * body = msgpack {
 *   v: 1,
 *   attest: bytes      TPMS_ATTEST (magic ff544347, type 8018 quote, extraData = the 32-byte handle)
 *   sig: bytes         TPMT_SIGNATURE (u16 sigAlg 0x0018 ECDSA ‖ u16 hash 0x000B ‖ TPM2B r ‖ TPM2B s)
 *   pcrs: [[index, bytes32], ...]   the SHA-256 PCR values of the quoted selection, ascending
 *   akPub: bytes       the attestation key: SPKI DER of its ECDSA P-256 public key
 * }
 * ```
 * `endorsements` (sim): `[deviceCert]`, a sim device certificate binding `akPub` to the sim root
 * (see sim.ts). tpm2: the AK public key is trusted when pinned in the verifier's trust anchors.
 *
 * @module
 */

/** Suites a prover can offer. `passport` = an attestation result token from a verifier service. */
export type AttestSuite = 'tpm2' | 'sim' | 'passport'
export const ATTEST_SUITES: readonly AttestSuite[] = ['tpm2', 'sim', 'passport']

/** The one handle algorithm (docs/attestation.md §handle). */
export const HANDLE_ALG = 'sha256/v1'

/** Evidence formats. */
export const FORMAT = { TPM2_QUOTE: 'tpm2-quote-v1', SIM_TPM2: 'sim-tpm2-v1' } as const

/** One measurement: `pcr = SHA-256(pcr ‖ digest)`, with the data it measured when that is not secret. */
export interface EventLogEntry {
  pcr: number
  /** SHA-256 digest extended into the PCR (32 bytes). */
  digest: Uint8Array
  /** What was measured: `firmware`, `bootloader`, `kernel`, `config`, `app`, ... */
  type: string
  /** The measured bytes (digest = SHA-256(data)), present for the types a policy reads (`config`). */
  data?: Uint8Array
}

/** The part of an event log a piece of evidence carries: entries `from` (0-based index) onward. */
export interface EventLogDelta {
  from: number
  entries: EventLogEntry[]
}

/** Attestation evidence, as carried in handshake payloads and in-channel rounds. */
export interface Evidence {
  suite: 'tpm2' | 'sim'
  fmt: string
  handleAlg: string
  /** Format-specific body (see the module note). */
  body: Uint8Array
  endorsements?: Uint8Array[]
  log?: EventLogDelta
}

/** The decoded body of a TPM-shaped evidence. */
export interface QuoteBody {
  v: 1
  attest: Uint8Array
  sig: Uint8Array
  pcrs: [number, Uint8Array][]
  akPub: Uint8Array
}

/** AR4SI trust tiers; worst first when ranked by {@link TIER_RANK}. */
export type Tier = 'affirming' | 'warning' | 'contraindicated' | 'none'
export const TIER_RANK: Readonly<Record<Tier, number>> = { affirming: 0, warning: 1, none: 2, contraindicated: 3 }

/**
 * The AR4SI trustworthiness vector. Claim values: 0 no claim; 1 verifier malfunction / unexpected
 * evidence; 2–31 affirming; 32–95 warning; 96–127 contraindicated.
 */
export interface TrustVector {
  instanceIdentity: number
  configuration: number
  executables: number
  fileSystem: number
  hardware: number
  runtimeOpaque: number
  storageOpaque: number
  sourcedData: number
}

/** An EAR-like attestation result (kept as an object locally; signed as a token by a verifier service). */
export interface AttestationResult {
  profile: 'tag:throughline.dev,2026:ear-v1'
  /** Issued at / expires, ms since the epoch. */
  iat: number
  exp: number
  verifierId: string
  /** The handle the evidence was bound to (passport: empty). */
  nonce: Uint8Array
  /** Worst tier of the trust vector (or `none` when appraisal could not be completed). */
  status: Tier
  trustVector: TrustVector
  policyId: string
  /** The attested key: the attester's Noise static public key; and its identifier when known. */
  keyAttestation: { pub: Uint8Array; identifier?: string }
  suite: 'tpm2' | 'sim'
  /** Human-readable reason of the worst claim (e.g. `debug mode on`, `handle mismatch`). */
  detail?: string
  /** Machine reason of the worst claim (e.g. `handle_mismatch`, `debug_enabled`); absent when affirming. See verifier.ts. */
  reason?: string
  /** Claims read from the measurements (firmware version, svn, debug, ...). */
  claims?: Record<string, string | number | boolean>
}

/**
 * What an attester may bind evidence to: handed out only by the secure channel from its own live
 * handshake (see handle.ts). There is no way to ask an attester to sign caller-chosen bytes.
 */
export interface AttestationContext {
  /** 'R' responder evidence, 'I' initiator evidence. */
  readonly role: 'R' | 'I'
  readonly suite: 'tpm2' | 'sim'
  /** The 32-byte handle derived from this context (docs/attestation.md §handle). */
  readonly handle: Uint8Array
  /** Event-log entries the verifier already holds for this attester (delta evidence); 0 = send all. */
  readonly logFrom: number
}

/** Produces evidence for a context the channel minted. */
export interface Attester {
  readonly suite: 'tpm2' | 'sim'
  /** Evidence over the context's handle. Throws ERR_ATTEST_PROVER_FAILED (or ERR_INVALID_ARGUMENT for a forged context). */
  attest(context: AttestationContext, signal?: AbortSignal): Promise<Evidence>
}
