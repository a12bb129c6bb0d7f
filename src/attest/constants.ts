/**
 * Defaults and limits of the attestation layer (documented in docs/limits.md).
 *
 * @module
 */

/** Largest encoded evidence accepted (bytes), checked before decoding. */
export const MAX_EVIDENCE_BYTES = 64 * 1024
/** Most event-log entries one piece of evidence may carry. */
export const MAX_LOG_ENTRIES = 1024
/** Largest `data` of one event-log entry (bytes). */
export const MAX_EVENT_DATA = 1024
/** Most endorsements (certificates) one piece of evidence may carry, and the largest one (bytes). */
export const MAX_ENDORSEMENTS = 4
export const MAX_ENDORSEMENT_BYTES = 4096
/** Largest encoded result token accepted (bytes). */
export const MAX_TOKEN_BYTES = 8192

/** PCRs quoted when nothing else is configured: firmware, config, bootloader, kernel/secure boot, app. */
export const DEFAULT_PCR_SELECTION: readonly number[] = [0, 1, 4, 7, 10]

/** How long an appraisal or attestation round may take (ms): real TPMs are slow. */
export const DEFAULT_ATTEST_TIMEOUT_MS = 20_000
/** Lifetime of an attestation result issued by a verifier (ms). */
export const DEFAULT_RESULT_TTL_MS = 5 * 60_000
/** Clock skew tolerated on every iat/exp check (ms). */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 30_000
/** A passport is refreshed in the channel when this fraction of its lifetime has passed. */
export const DEFAULT_RENEWAL_THRESHOLD = 0.5
/** Re-attestation interval when streaming is on and nothing else is configured (ms). */
export const DEFAULT_REATTEST_INTERVAL_MS = 3_600_000
