/**
 * The one error class of throughline and the registry of its stable codes.
 *
 * Every error the library raises on purpose is a {@link ThroughlineError} whose `code` is one of
 * the keys of {@link ERROR_CODES}. Codes are never reused or renamed; each one is documented in
 * `docs/errors.md` (a test checks that the registry, the docs and the sources agree).
 *
 * @module
 */

/** Code → one-line meaning. The long form of each lives in docs/errors.md. */
export const ERROR_CODES = {
  // ---- general ----
  ERR_INVALID_ARGUMENT: 'an argument has the wrong type, size or range',
  ERR_TIMEOUT: 'an operation did not complete in time',
  ERR_ABORTED: 'an operation was aborted through its AbortSignal',
  ERR_NOT_STARTED: 'the node or component is not running',
  ERR_STOPPED: 'the node or component was stopped while the operation was pending',

  // ---- router: addresses, routes, envelope ----
  ERR_ADDRESS_SYNTAX: 'an address is not of the form type#value or its value is invalid',
  ERR_ROUTE_SYNTAX: 'a route text could not be parsed; the message names the bad segment',
  ERR_ROUTE_TOO_LONG: 'a route has more hops than the limit',
  ERR_ROUTE_EMPTY: 'a message has an empty onward route',
  ERR_UNSUPPORTED_VERSION: 'a frame or connection announces a protocol version this node does not speak',
  ERR_MALFORMED_ENVELOPE: 'a message envelope could not be decoded',
  ERR_HEADER_TOO_LARGE: 'a message header is larger than the limit',

  // ---- router: delivery ----
  ERR_NO_SUCH_ADDRESS: 'no worker or transport handles the next address of the route',
  ERR_ADDRESS_IN_USE: 'a worker address is already taken',
  ERR_ACCESS_DENIED: 'access control refused a message',
  ERR_NO_TRANSPORT: 'no transport is registered for the address type',

  // ---- transports ----
  ERR_FRAME_TOO_LARGE: 'a frame length prefix is over the configured maximum',
  ERR_CONNECTION_REFUSED: 'the peer refused the connection or could not be reached',
  ERR_CONNECTION_CLOSED: 'the connection closed before or while the operation ran',
  ERR_IDLE_TIMEOUT: 'nothing was received on a connection for longer than the idle timeout',
  ERR_TRANSPORT_ADDRESS: 'a transport address (host:port and the like) is invalid',
  ERR_LISTEN_FAILED: 'a listener could not be started',
  ERR_SERIAL_PORT_IN_USE: 'a serial port is already open in this node (by its listener or a connection)',
  ERR_WS_PROTOCOL: 'a WebSocket peer broke the protocol: a text message, a bad frame, or bytes that are not WebSocket frames',

  // ---- services ----
  ERR_RELAY_NAME_TAKEN: 'a relay name is held by another live registration',
  ERR_RELAY_NAME_INVALID: 'a relay name is empty, too long or has characters outside [A-Za-z0-9_.-]',
  ERR_RELAY_REFUSED: 'the relay refused or did not answer a registration',
  ERR_BAD_REQUEST: 'a service received a request it cannot parse',

  // ---- channel: crypto and noise ----
  ERR_CRYPTO_DH_ZERO: 'X25519 gave the all-zero output: the peer public key is of low order',
  ERR_DECRYPT: 'an AEAD ciphertext did not authenticate (tampered, or wrong key, nonce or associated data)',
  ERR_HANDSHAKE_FAILED: 'a Noise handshake step failed; the message names the message number and stage',
  ERR_NONCE_EXHAUSTED: 'a Noise nonce reached 2^64-1, which is reserved; the key must be replaced',
  ERR_NOISE_MESSAGE_TOO_LARGE: 'a Noise message would be longer than 65535 bytes',
  ERR_KEY_DESTROYED: 'a CipherState was used after destroy() wiped its key',
  ERR_REPLAY: 'a message counter was already seen, is older than the replay window, or is at the reject limit',

  // ---- channel: identities and secure channels ----
  ERR_IDENTITY_INVALID: 'an identity, identity file or key binding is malformed, expired or does not verify',
  ERR_IDENTITY_EXISTS: 'an identity of that name exists already',
  ERR_IDENTITY_NOT_FOUND: 'no identity of that name',
  ERR_TRUST_POLICY: "the peer's identity is not trusted by the trust policy",
  ERR_CHANNEL_CLOSED: 'the secure channel is closed (the error says why and which side closed it)',
  ERR_HANDSHAKE_TIMEOUT: 'a secure channel handshake did not complete in time',
  ERR_HANDSHAKE_LIMIT: 'a secure channel listener has too many half-open handshakes',
  ERR_CHANNEL_MESSAGE: 'a secure channel message is malformed',

  // ---- vault ----
  ERR_VAULT_NOT_FOUND: 'no vault file at the given path',
  ERR_VAULT_EXISTS: 'a vault file exists already at the given path',
  ERR_VAULT_CORRUPT: 'a vault file or sealed blob is truncated or malformed',
  ERR_VAULT_DECRYPT: 'a vault file or sealed blob does not decrypt: wrong passphrase or key file, or it was altered',
  ERR_VAULT_CLOSED: 'the vault is closed',
  ERR_VAULT_KEY_NOT_FOUND: 'no key with that handle in the vault (or it is of another kind)',
  ERR_VAULT_UNSUPPORTED: 'the vault cannot do this (e.g. PCR-bound sealing without a TPM)',
  ERR_VAULT_WRONG_TPM: "a TPM vault's keys were created under another storage root key: another TPM, or its owner hierarchy was cleared",

  // ---- vault: tpm ----
  ERR_TPM: 'the TPM answered a command with an error response code; details name it (rc, name, handle/parameter/session index)',
  ERR_TPM_TRANSPORT: 'the TPM could not be reached, the connection or device failed, or a response was over the size limit',
  ERR_TPM_MALFORMED: 'a TPM response or TPM structure (TPMS_ATTEST, TPM2B_PUBLIC, a signature) is short or malformed',

  // ---- attestation ----
  ERR_ATTEST_NO_MATCH: 'the two ends share no attestation suite that one requires of the other',
  ERR_ATTEST_PROVER_FAILED: 'this node (or the peer) could not produce attestation evidence',
  ERR_ATTEST_VERIFIER_FAILED: "the appraisal of the peer's evidence or result failed (signature, handle, PCRs, log, clock, endorsement)",
  ERR_ATTEST_POLICY_DENY: "the peer's attestation result does not meet the policy (e.g. status warning where affirming is required)",
  ERR_ATTEST_NO_VALID_RESULT: "the peer's attestation result (passport) expired and was not refreshed",
  ERR_ATTEST_EVIDENCE: 'attestation evidence, an event log, a result token or an endorsement is malformed or over a size limit',
  ERR_ATTEST_ENROL_FAILED: 'an attestation key was refused at enrolment: wrong attributes, wrong EK, or its credential activation failed or returned the wrong secret',
  ERR_VERIFIER_UNAVAILABLE: 'the verifier service did not answer within the timeout or could not be reached',
  ERR_VERIFIER_DENIED: 'the verifier service refused an admin request from an identity that is not an admin',

  // ---- cli ----
  ERR_CLI_USAGE: 'the command line is not valid',
} as const

/** A stable error code. */
export type ErrorCode = keyof typeof ERROR_CODES

/** Optional structured details carried by an error (never secrets). */
export interface ErrorOptions {
  cause?: unknown
  details?: Record<string, unknown>
}

/**
 * The error class of throughline. Match on `code`, never on the message text.
 */
export class ThroughlineError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ThroughlineError'
    this.code = code
    this.details = options.details
  }
}

/** True when `err` is a ThroughlineError, optionally with the given code. */
export function isThroughlineError(err: unknown, code?: ErrorCode): err is ThroughlineError {
  return err instanceof ThroughlineError && (code === undefined || err.code === code)
}

/** Short helper to build an error. */
export function tlError(code: ErrorCode, message: string, options?: ErrorOptions): ThroughlineError {
  return new ThroughlineError(code, message, options)
}
