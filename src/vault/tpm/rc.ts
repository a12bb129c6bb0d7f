/**
 * TPM 2.0 response-code decoding (Part 2, §6.6 TPM_RC) into named, typed errors.
 *
 * Rules:
 * - `0` is success.
 * - Format 1 (bit 7, 0x080, set): the code is `0x080 + (rc & 0x3F)`. If bit 6 (0x040) is set,
 *   `(rc >> 8) & 0xF` is the parameter number; otherwise, if bit 11 (0x800) is set,
 *   `(rc >> 8) & 7` is the session number; otherwise `(rc >> 8) & 7` is the handle number
 *   (0 = not tied to a handle).
 * - Format 0 with bit 8 (0x100, RC_VER1): a TPM 2.0 code; bit 11 (0x800) makes it a warning
 *   (`0x900 | n`), bit 10 (0x400) a vendor code. Without bit 8: a TPM 1.2 code.
 *
 * A failed command becomes `ThroughlineError` `ERR_TPM` with
 * `details: { rc, name, command, kind?, index? }`, e.g. `0x99D` → `TPM_RC_POLICY_FAIL`, session 1.
 *
 * @module
 */
import { tlError, type ThroughlineError } from '../../errors.ts'
import { commandName } from './constants.ts'

const RC_VER1 = 0x100
const RC_FMT1 = 0x080
const RC_WARN = 0x900

/** Format-0 errors, by `rc & 0x7F` (with RC_VER1). */
const FMT0: Record<number, string> = {
  0x000: 'TPM_RC_INITIALIZE',
  0x001: 'TPM_RC_FAILURE',
  0x003: 'TPM_RC_SEQUENCE',
  0x00b: 'TPM_RC_PRIVATE',
  0x019: 'TPM_RC_HMAC',
  0x020: 'TPM_RC_DISABLED',
  0x021: 'TPM_RC_EXCLUSIVE',
  0x024: 'TPM_RC_AUTH_TYPE',
  0x025: 'TPM_RC_AUTH_MISSING',
  0x026: 'TPM_RC_POLICY',
  0x027: 'TPM_RC_PCR',
  0x028: 'TPM_RC_PCR_CHANGED',
  0x02d: 'TPM_RC_UPGRADE',
  0x02e: 'TPM_RC_TOO_MANY_CONTEXTS',
  0x02f: 'TPM_RC_AUTH_UNAVAILABLE',
  0x030: 'TPM_RC_REBOOT',
  0x031: 'TPM_RC_UNBALANCED',
  0x042: 'TPM_RC_COMMAND_SIZE',
  0x043: 'TPM_RC_COMMAND_CODE',
  0x044: 'TPM_RC_AUTHSIZE',
  0x045: 'TPM_RC_AUTH_CONTEXT',
  0x046: 'TPM_RC_NV_RANGE',
  0x047: 'TPM_RC_NV_SIZE',
  0x048: 'TPM_RC_NV_LOCKED',
  0x049: 'TPM_RC_NV_AUTHORIZATION',
  0x04a: 'TPM_RC_NV_UNINITIALIZED',
  0x04b: 'TPM_RC_NV_SPACE',
  0x04c: 'TPM_RC_NV_DEFINED',
  0x050: 'TPM_RC_BAD_CONTEXT',
  0x051: 'TPM_RC_CPHASH',
  0x052: 'TPM_RC_PARENT',
  0x053: 'TPM_RC_NEEDS_TEST',
  0x054: 'TPM_RC_NO_RESULT',
  0x055: 'TPM_RC_SENSITIVE',
}

/** Format-1 errors, by `rc & 0x3F`. */
const FMT1: Record<number, string> = {
  0x001: 'TPM_RC_ASYMMETRIC',
  0x002: 'TPM_RC_ATTRIBUTES',
  0x003: 'TPM_RC_HASH',
  0x004: 'TPM_RC_VALUE',
  0x005: 'TPM_RC_HIERARCHY',
  0x007: 'TPM_RC_KEY_SIZE',
  0x008: 'TPM_RC_MGF',
  0x009: 'TPM_RC_MODE',
  0x00a: 'TPM_RC_TYPE',
  0x00b: 'TPM_RC_HANDLE',
  0x00c: 'TPM_RC_KDF',
  0x00d: 'TPM_RC_RANGE',
  0x00e: 'TPM_RC_AUTH_FAIL',
  0x00f: 'TPM_RC_NONCE',
  0x010: 'TPM_RC_PP',
  0x012: 'TPM_RC_SCHEME',
  0x015: 'TPM_RC_SIZE',
  0x016: 'TPM_RC_SYMMETRIC',
  0x017: 'TPM_RC_TAG',
  0x018: 'TPM_RC_SELECTOR',
  0x01a: 'TPM_RC_INSUFFICIENT',
  0x01b: 'TPM_RC_SIGNATURE',
  0x01c: 'TPM_RC_KEY',
  0x01d: 'TPM_RC_POLICY_FAIL',
  0x01f: 'TPM_RC_INTEGRITY',
  0x020: 'TPM_RC_TICKET',
  0x021: 'TPM_RC_RESERVED_BITS',
  0x022: 'TPM_RC_BAD_AUTH',
  0x023: 'TPM_RC_EXPIRED',
  0x024: 'TPM_RC_POLICY_CC',
  0x025: 'TPM_RC_BINDING',
  0x026: 'TPM_RC_CURVE',
  0x027: 'TPM_RC_ECC_POINT',
  0x028: 'TPM_RC_FW_LIMITED',
  0x029: 'TPM_RC_SVN_LIMITED',
}

/** Warnings, by `rc & 0x7F` (with RC_WARN). */
const WARN: Record<number, string> = {
  0x001: 'TPM_RC_CONTEXT_GAP',
  0x002: 'TPM_RC_OBJECT_MEMORY',
  0x003: 'TPM_RC_SESSION_MEMORY',
  0x004: 'TPM_RC_MEMORY',
  0x005: 'TPM_RC_SESSION_HANDLES',
  0x006: 'TPM_RC_OBJECT_HANDLES',
  0x007: 'TPM_RC_LOCALITY',
  0x008: 'TPM_RC_YIELDED',
  0x009: 'TPM_RC_CANCELED',
  0x00a: 'TPM_RC_TESTING',
  0x010: 'TPM_RC_REFERENCE_H0',
  0x011: 'TPM_RC_REFERENCE_H1',
  0x012: 'TPM_RC_REFERENCE_H2',
  0x013: 'TPM_RC_REFERENCE_H3',
  0x014: 'TPM_RC_REFERENCE_H4',
  0x015: 'TPM_RC_REFERENCE_H5',
  0x016: 'TPM_RC_REFERENCE_H6',
  0x018: 'TPM_RC_REFERENCE_S0',
  0x019: 'TPM_RC_REFERENCE_S1',
  0x01a: 'TPM_RC_REFERENCE_S2',
  0x01b: 'TPM_RC_REFERENCE_S3',
  0x01c: 'TPM_RC_REFERENCE_S4',
  0x01d: 'TPM_RC_REFERENCE_S5',
  0x01e: 'TPM_RC_REFERENCE_S6',
  0x020: 'TPM_RC_NV_RATE',
  0x021: 'TPM_RC_LOCKOUT',
  0x022: 'TPM_RC_RETRY',
  0x023: 'TPM_RC_NV_UNAVAILABLE',
  0x07f: 'TPM_RC_NOT_USED',
}

/** Response codes the client refers to by value. */
export const TPM_RC = {
  SUCCESS: 0x000,
  INITIALIZE: 0x100,
  VALUE: 0x084,
  HANDLE: 0x08b,
  POLICY_FAIL: 0x09d,
  INTEGRITY: 0x09f,
  OBJECT_MEMORY: 0x902,
  SESSION_MEMORY: 0x903,
  YIELDED: 0x908,
  TESTING: 0x90a,
  LOCKOUT: 0x921,
  RETRY: 0x922,
} as const

/** A decoded response code. */
export interface DecodedRc {
  /** The raw response code. */
  rc: number
  /** The base code without the handle/parameter/session number (e.g. 0x09D for 0x99D). */
  code: number
  /** `TPM_RC_<NAME>`, or `TPM_RC_UNKNOWN_0x…` / `TPM_RC_VENDOR_0x…` / `TPM_RC_TPM12_0x…`. */
  name: string
  format: 0 | 1
  warning: boolean
  /** Format 1: what `index` numbers. */
  kind?: 'handle' | 'parameter' | 'session'
  /** Format 1: the 1-based handle, parameter or session number. */
  index?: number
}

const hex = (n: number): string => `0x${n.toString(16)}`

/** Decodes a TPM 2.0 response code. */
export function decodeRc(rc: number): DecodedRc {
  rc = rc >>> 0
  if (rc === 0) return { rc, code: 0, name: 'TPM_RC_SUCCESS', format: 0, warning: false }
  if (rc > 0xffff) return { rc, code: rc, name: `TPM_RC_UNKNOWN_${hex(rc)}`, format: 0, warning: false }
  if (rc & RC_FMT1) {
    const code = RC_FMT1 + (rc & 0x3f)
    const out: DecodedRc = { rc, code, name: FMT1[rc & 0x3f] ?? `TPM_RC_UNKNOWN_${hex(code)}`, format: 1, warning: false }
    const n = (rc >> 8) & 0xf
    if (rc & 0x040) {
      out.kind = 'parameter'
      out.index = n
    } else if (rc & 0x800) {
      out.kind = 'session'
      out.index = n & 7
    } else if ((n & 7) !== 0) {
      out.kind = 'handle'
      out.index = n & 7
    }
    return out
  }
  if (!(rc & RC_VER1)) return { rc, code: rc, name: `TPM_RC_TPM12_${hex(rc)}`, format: 0, warning: false }
  if (rc & 0x400) return { rc, code: rc, name: `TPM_RC_VENDOR_${hex(rc)}`, format: 0, warning: (rc & 0x800) !== 0 }
  if (rc & 0x800) {
    const code = RC_WARN | (rc & 0x7f)
    return { rc, code, name: WARN[rc & 0x7f] ?? `TPM_RC_UNKNOWN_${hex(code)}`, format: 0, warning: true }
  }
  const code = RC_VER1 | (rc & 0x7f)
  return { rc, code, name: FMT0[rc & 0x7f] ?? `TPM_RC_UNKNOWN_${hex(code)}`, format: 0, warning: false }
}

/** A human-readable form: `TPM_RC_POLICY_FAIL (0x99d), session 1`. */
export function describeRc(rc: number): string {
  const d = decodeRc(rc)
  return `${d.name} (${hex(d.rc)})${d.kind === undefined ? '' : `, ${d.kind} ${d.index}`}`
}

/** The `ERR_TPM` error for a failed command. */
export function tpmError(rc: number, cc?: number): ThroughlineError {
  const d = decodeRc(rc)
  const details: Record<string, unknown> = { rc: d.rc, code: d.code, name: d.name }
  if (cc !== undefined) details.command = commandName(cc)
  if (d.kind !== undefined) {
    details.kind = d.kind
    details.index = d.index
  }
  return tlError('ERR_TPM', `${cc === undefined ? 'TPM' : commandName(cc)} failed: ${describeRc(rc)}`, { details })
}

/** True for codes after which the same command should be sent again (RETRY, YIELDED, TESTING). */
export function isRetryableRc(rc: number): boolean {
  return rc === TPM_RC.RETRY || rc === TPM_RC.YIELDED || rc === TPM_RC.TESTING
}

/** The base code of an `ERR_TPM` error (e.g. 0x09D for POLICY_FAIL in any session), or undefined. */
export function tpmErrorCode(err: unknown): number | undefined {
  if (!(err instanceof Error) || !('code' in err) || err.code !== 'ERR_TPM') return undefined
  const details = (err as ThroughlineError).details
  return typeof details?.code === 'number' ? details.code : undefined
}
