/**
 * `TpmClient`: throughline's own TPM 2.0 client — typed commands over a {@link TpmTransport}, no
 * tpm2-tools and no native code at run time.
 *
 * Commands: Startup, Shutdown, GetRandom, GetCapability (handles, properties), PCR_Read (paged:
 * a TPM returns at most 8 digests per call), PCR_Extend, CreatePrimary, Create, Load, ReadPublic,
 * Sign, Quote, Certify, StartAuthSession (policy/trial), PolicyPCR, PolicyGetDigest, Unseal,
 * PolicySecret, ActivateCredential, NV_ReadPublic, NV_Read, FlushContext, EvictControl.
 *
 * Endorsement: {@link TpmClient.createEk} creates the TCG ECC P-256 EK (deterministic, endorsement
 * hierarchy); {@link TpmClient.activateCredentialWithEk} runs TPM2_ActivateCredential with an
 * AK (password) and that EK (policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT)),
 * flushing the EK and the session whatever happens.
 *
 * Authorization: password sessions (TPM_RS_PW, {@link passwordAuth}) for objects with (empty)
 * auth values, and policy sessions ({@link policyAuth}) for PCR-bound sealed objects. HMAC
 * sessions and parameter encryption are not implemented (not needed against swtpm; they matter
 * against a TPM on an exposed bus).
 *
 * Errors: a non-zero response code is `ERR_TPM` with `details: { rc, code, name, command, kind?, index? }`
 * (see `rc.ts`); TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING are retried with a short
 * exponential backoff first. A short or malformed response is `ERR_TPM_MALFORMED`; transport
 * failures are `ERR_TPM_TRANSPORT` / `ERR_TIMEOUT`.
 *
 * Handle hygiene: swtpm has no resource manager and 3 object slots. The `with*` helpers flush
 * every transient object and session they create in `finally`; {@link TpmClient.open} first
 * flushes transient objects and sessions left over by a crashed run. {@link TpmClient.close} sends
 * `TPM2_Shutdown(CLEAR)` (socket endpoints; off by default for `/dev/tpmrm0`, where the OS owns
 * the TPM's power cycle) so a stop does not count against dictionary-attack lockout.
 *
 * The client serializes single commands (the transport's queue) but not multi-command flows:
 * run flows that load objects one at a time, or a TPM without a resource manager may answer
 * TPM_RC_OBJECT_MEMORY (0x902).
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { tlError, isThroughlineError } from '../../errors.ts'
import {
  HASH_ALGS,
  TPM_ALG,
  TPM_CAP,
  TPM_CC,
  TPM_HEADER_SIZE,
  TPM_HT,
  TPM_MAX_SYM_DATA,
  TPM_RH,
  TPM_SE,
  TPM_ST,
  TPM_SU,
  TPMA_SESSION,
  commandName,
} from './constants.ts'
import {
  TpmReader,
  TpmWriter,
  malformed,
  normalizePcrs,
  readDigestList,
  readPcrSelection,
  readSignature,
  writePcrSelection,
  type PcrSelection,
  type TpmSignature,
} from './marshal.ts'
import { TPM_RC, isRetryableRc, tpmError } from './rc.ts'
import {
  objectName,
  policyPcrDigest,
  publicArea,
  ekTemplate,
  sealedDataTemplate,
  srkTemplate,
  writePublic,
  type Scheme,
  type TpmtPublic,
} from './templates.ts'
import { DeviceTpmTransport, openTpmTransport, type TpmTransport, type TpmTransportOptions } from './transport.ts'

/** One TPMS_AUTH_COMMAND: a session handle plus its nonce, attributes and hmac (= password for TPM_RS_PW). */
export interface AuthSession {
  handle: number
  nonce?: Uint8Array
  attributes?: number
  hmac?: Uint8Array
}

/** A password authorization (TPM_RS_PW); the default password is empty. */
export function passwordAuth(password: Uint8Array = new Uint8Array(0)): AuthSession {
  return { handle: TPM_RH.PW, hmac: password }
}

/** An authorization through a policy session (no PolicyAuthValue/PolicyPassword: empty hmac). */
export function policyAuth(session: number): AuthSession {
  return { handle: session, attributes: TPMA_SESSION.continueSession }
}

/** A created object kept outside the TPM: the TPM2B_PUBLIC and TPM2B_PRIVATE wire bytes (size prefix included). */
export interface KeyBlobs {
  public: Uint8Array
  private: Uint8Array
}

/** An object loaded in the TPM. */
export interface LoadedObject {
  handle: number
  /** The object's Name (`u16 nameAlg ‖ H(TPMT_PUBLIC)`). */
  name: Uint8Array
}

/** A primary object: loaded, with its TPM2B_PUBLIC bytes. */
export interface PrimaryObject extends LoadedObject {
  public: Uint8Array
}

/** The output of Quote and Certify: the signed TPMS_ATTEST bytes and the signature. */
export interface AttestResult {
  attest: Uint8Array
  signature: TpmSignature
}

/** Options of {@link TpmClient}. */
export interface TpmClientOptions extends TpmTransportOptions {
  /** At open, flush transient objects and loaded sessions left by a crashed run. Default true. */
  flushOnOpen?: boolean
  /** Send TPM2_Shutdown(CLEAR) in close(). Default true, except for a device transport. */
  shutdownOnClose?: boolean
  /** Retries of TPM_RC_RETRY / YIELDED / TESTING: attempts in all (default 8), first delay (5 ms), cap (250 ms). */
  retry?: { attempts?: number; baseDelayMs?: number; maxDelayMs?: number }
}

/** A request to {@link TpmClient.execute}. */
export interface TpmRequest {
  /** The handle area. */
  handles?: readonly number[]
  /** One authorization per handle that needs one (they come first in the handle area). Non-empty = TPM_ST_SESSIONS. */
  auths?: readonly AuthSession[]
  /** The parameter area, already marshalled. */
  params?: Uint8Array
  /** How many handles the response carries (CreatePrimary, Load, StartAuthSession: 1). */
  outHandles?: number
  signal?: AbortSignal
}

/** The decoded parts of a successful response. */
export interface TpmResponse {
  handles: number[]
  /** A reader over the response parameter area (callers should end() it). */
  params: TpmReader
}

const EMPTY = new Uint8Array(0)

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(tlError('ERR_ABORTED', 'TPM command aborted', { cause: signal.reason }))
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(tlError('ERR_ABORTED', 'TPM command aborted', { cause: signal?.reason }))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`
}

function checkBytes(name: string, b: Uint8Array, max: number): void {
  if (!(b instanceof Uint8Array)) throw tlError('ERR_INVALID_ARGUMENT', `${name} must be a Uint8Array`)
  if (b.length > max) throw tlError('ERR_INVALID_ARGUMENT', `${name} is ${b.length} bytes, at most ${max} allowed`)
}

/** Checks a TPM2B blob's size prefix matches its length. */
function checkBlob(name: string, b: Uint8Array): void {
  if (!(b instanceof Uint8Array) || b.length < 2 || ((b[0]! << 8) | b[1]!) !== b.length - 2) {
    throw tlError('ERR_INVALID_ARGUMENT', `${name} is not a TPM2B (u16 size ‖ bytes) blob`)
  }
}

function selectionOf(pcrs: readonly number[] | readonly PcrSelection[]): PcrSelection[] {
  if (pcrs.length > 0 && typeof pcrs[0] === 'object') return (pcrs as readonly PcrSelection[]).map((s) => ({ hashAlg: s.hashAlg, pcrs: normalizePcrs(s.pcrs) }))
  return [{ hashAlg: TPM_ALG.SHA256, pcrs: normalizePcrs(pcrs as readonly number[]) }]
}

function writeSigScheme(w: TpmWriter, scheme: Scheme | null): void {
  if (scheme === null) w.u16(TPM_ALG.NULL)
  else {
    w.u16(scheme.scheme).u16(scheme.hashAlg)
    if (scheme.scheme === TPM_ALG.ECDAA) w.u16(scheme.count ?? 0)
  }
}

/** A TPM 2.0 client over one transport. */
export class TpmClient {
  readonly transport: TpmTransport
  readonly #flushOnOpen: boolean
  readonly #shutdownOnClose: boolean
  readonly #attempts: number
  readonly #baseDelay: number
  readonly #maxDelay: number
  #closed = false

  /** Wraps a transport; prefer {@link TpmClient.open}, which also recovers from a crashed run. */
  constructor(transport: TpmTransport, options: TpmClientOptions = {}) {
    this.transport = transport
    this.#flushOnOpen = options.flushOnOpen ?? true
    this.#shutdownOnClose = options.shutdownOnClose ?? !(transport instanceof DeviceTpmTransport)
    this.#attempts = Math.max(1, options.retry?.attempts ?? 8)
    this.#baseDelay = Math.max(0, options.retry?.baseDelayMs ?? 5)
    this.#maxDelay = Math.max(this.#baseDelay, options.retry?.maxDelayMs ?? 250)
  }

  /**
   * Opens a client on an endpoint (`unix:PATH`, `tcp:HOST:PORT`, `/dev/tpmrm0`) or a transport:
   * sends Startup(CLEAR) if the TPM answers TPM_RC_INITIALIZE, then flushes leftover transient
   * objects and sessions (unless `flushOnOpen: false`).
   */
  static async open(endpoint: string | TpmTransport, options: TpmClientOptions = {}): Promise<TpmClient> {
    const transport = typeof endpoint === 'string' ? openTpmTransport(endpoint, options) : endpoint
    const client = new TpmClient(transport, options)
    try {
      try {
        await client.getHandles(TPM_HT.TRANSIENT)
      } catch (err) {
        if (!isThroughlineError(err, 'ERR_TPM') || err.details?.rc !== TPM_RC.INITIALIZE) throw err
        await client.startup('clear')
      }
      if (client.#flushOnOpen) await client.flushTransients()
    } catch (err) {
      await transport.close().catch(() => {})
      throw err
    }
    return client
  }

  // -------------------------------------------------------------------------------------------
  // Command execution

  /** Marshals a command (header, handles, auth area, params). */
  static encodeCommand(cc: number, req: TpmRequest = {}): Uint8Array {
    const auths = req.auths ?? []
    const w = new TpmWriter(256)
    w.u16(auths.length > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(cc)
    for (const h of req.handles ?? []) w.u32(h)
    if (auths.length > 0) {
      const a = new TpmWriter(64)
      for (const s of auths) a.u32(s.handle).tpm2b(s.nonce ?? EMPTY).u8(s.attributes ?? 0).tpm2b(s.hmac ?? EMPTY)
      w.u32(a.length).bytes(a.finish())
    }
    if (req.params !== undefined) w.bytes(req.params)
    w.patchU32(2, w.length)
    return w.finish()
  }

  /** Decodes a response; a non-zero response code throws `ERR_TPM`. */
  static decodeResponse(cc: number, response: Uint8Array, req: TpmRequest = {}): TpmResponse {
    const what = `${commandName(cc)} response`
    const r = new TpmReader(response, what)
    const tag = r.u16('tag')
    const size = r.u32('responseSize')
    const rc = r.u32('responseCode')
    if (size !== response.length) throw malformed(`${what}: header size ${size} but ${response.length} bytes`, { size, length: response.length })
    if (rc !== 0) throw tpmError(rc, cc)
    const nAuths = req.auths?.length ?? 0
    const expectTag = nAuths > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS
    if (tag !== expectTag) throw malformed(`${what}: tag 0x${tag.toString(16)}, expected 0x${expectTag.toString(16)}`, { tag })
    const handles: number[] = []
    for (let i = 0; i < (req.outHandles ?? 0); i++) handles.push(r.u32(`handle[${i}]`))
    if (nAuths === 0) return { handles, params: r.sub(r.remaining, what) }
    const paramSize = r.u32('parameterSize')
    const params = r.sub(paramSize, what)
    for (let i = 0; i < nAuths; i++) {
      r.tpm2b(`authResponse[${i}].nonce`, 64)
      r.u8(`authResponse[${i}].attributes`)
      r.tpm2b(`authResponse[${i}].hmac`, 64)
    }
    r.end()
    return { handles, params }
  }

  /**
   * Runs one command: marshal, send, decode. TPM_RC_RETRY / YIELDED / TESTING are retried with a
   * backoff (5, 10, 20 … ms, capped); any other error response is `ERR_TPM`.
   */
  async execute(cc: number, req: TpmRequest = {}): Promise<TpmResponse> {
    const command = TpmClient.encodeCommand(cc, req)
    let delay = this.#baseDelay
    for (let attempt = 1; ; attempt++) {
      const response = await this.transport.send(command, req.signal)
      if (response.length >= TPM_HEADER_SIZE && attempt < this.#attempts) {
        const rc = new DataView(response.buffer, response.byteOffset, response.byteLength).getUint32(6)
        if (isRetryableRc(rc)) {
          await sleep(delay, req.signal)
          delay = Math.min(this.#maxDelay, Math.max(1, delay * 2))
          continue
        }
      }
      return TpmClient.decodeResponse(cc, response, req)
    }
  }

  /** Runs a command that creates a handle, then `parse`; if parsing fails the handle is flushed. */
  async #withNewHandle<T>(cc: number, req: TpmRequest, parse: (handle: number, r: TpmReader) => T): Promise<T> {
    const { handles, params } = await this.execute(cc, { ...req, outHandles: 1 })
    const handle = handles[0]!
    try {
      const out = parse(handle, params)
      params.end()
      return out
    } catch (err) {
      await this.flushContext(handle).catch(() => {})
      throw err
    }
  }

  // -------------------------------------------------------------------------------------------
  // Start-up, shutdown, random, capabilities

  /** TPM2_Startup. swtpm started with `--flags startup-clear` needs none (it answers TPM_RC_INITIALIZE only after a power cycle). */
  async startup(type: 'clear' | 'state' = 'clear'): Promise<void> {
    const p = new TpmWriter(2).u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE).finish()
    ;(await this.execute(TPM_CC.Startup, { params: p })).params.end()
  }

  /** TPM2_Shutdown: an orderly stop (no dictionary-attack penalty at the next start). */
  async shutdown(type: 'clear' | 'state' = 'clear'): Promise<void> {
    const p = new TpmWriter(2).u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE).finish()
    ;(await this.execute(TPM_CC.Shutdown, { params: p })).params.end()
  }

  /** `n` random bytes from the TPM (several GetRandom calls when `n` is over the TPM's per-call maximum). */
  async getRandom(n: number): Promise<Uint8Array> {
    if (!Number.isInteger(n) || n < 0 || n > 65536) throw tlError('ERR_INVALID_ARGUMENT', 'getRandom: n must be an integer in [0, 65536]')
    const out = new Uint8Array(n)
    let got = 0
    while (got < n) {
      const ask = Math.min(n - got, 64)
      const { params } = await this.execute(TPM_CC.GetRandom, { params: new TpmWriter(2).u16(ask).finish() })
      const bytes = params.tpm2b('randomBytes', ask)
      params.end()
      if (bytes.length === 0) throw malformed('TPM2_GetRandom returned no bytes')
      out.set(bytes, got)
      got += bytes.length
    }
    return out
  }

  /** TPM2_GetCapability: `moreData`, the capability echoed, and a reader over the capability data union. */
  async getCapability(capability: number, property: number, count: number): Promise<{ moreData: boolean; capability: number; data: TpmReader }> {
    const p = new TpmWriter(12).u32(capability).u32(property).u32(count).finish()
    const { params } = await this.execute(TPM_CC.GetCapability, { params: p })
    const moreData = params.u8('moreData') !== 0
    const cap = params.u32('capabilityData.capability')
    if (cap !== capability) throw malformed(`TPM2_GetCapability: asked for capability ${capability}, got ${cap}`)
    return { moreData, capability: cap, data: params }
  }

  /**
   * The handles of one type (e.g. TPM_HT.TRANSIENT, TPM_HT.PERSISTENT), paging through moreData.
   * Sessions: TPM_HT.HMAC_SESSION (0x02, "loaded sessions") lists every loaded session, HMAC
   * (0x02xxxxxx) and policy (0x03xxxxxx) alike; TPM_HT.POLICY_SESSION (0x03) lists saved ones.
   */
  async getHandles(handleType: number): Promise<number[]> {
    const type = handleType >>> 24
    const isSessionType = (t: number): boolean => t === TPM_HT.HMAC_SESSION >>> 24 || t === TPM_HT.POLICY_SESSION >>> 24
    const accepts = (h: number): boolean => h >>> 24 === type || (isSessionType(type) && isSessionType(h >>> 24))
    const out: number[] = []
    let property = (type << 24) >>> 0
    for (let page = 0; page < 1024; page++) {
      const { moreData, data } = await this.getCapability(TPM_CAP.HANDLES, property, 64)
      const count = data.u32('TPML_HANDLE.count')
      if (count > 256) throw malformed(`TPM2_GetCapability: ${count} handles in one page`)
      let last: number | undefined
      for (let i = 0; i < count; i++) {
        const h = data.u32(`TPML_HANDLE[${i}]`)
        if (!accepts(h)) continue
        out.push(h)
        last = h
      }
      data.end()
      if (!moreData || last === undefined || (last & 0xffffff) === 0xffffff) return out
      property = ((type << 24) | ((last & 0xffffff) + 1)) >>> 0
    }
    throw malformed('TPM2_GetCapability: too many pages of handles')
  }

  /** TPM properties (TPM_CAP_TPM_PROPERTIES) from `first`, as property → value. */
  async getProperties(first: number, count = 64): Promise<Map<number, number>> {
    const { data } = await this.getCapability(TPM_CAP.TPM_PROPERTIES, first, count)
    const n = data.u32('TPML_TAGGED_TPM_PROPERTY.count')
    if (n > 256) throw malformed(`TPM2_GetCapability: ${n} properties`)
    const out = new Map<number, number>()
    for (let i = 0; i < n; i++) out.set(data.u32('property'), data.u32('value'))
    data.end()
    return out
  }

  // -------------------------------------------------------------------------------------------
  // PCRs

  /**
   * Reads PCR values of one bank (default SHA-256). A TPM answers at most 8 digests per
   * TPM2_PCR_Read, so this pages on the returned selection until every PCR is read; if the PCR
   * update counter changes between pages the whole read starts again (values from one state).
   */
  async pcrRead(pcrs: readonly number[], hashAlg: number = TPM_ALG.SHA256): Promise<Map<number, Uint8Array>> {
    const wanted = normalizePcrs(pcrs)
    const size = HASH_ALGS.get(hashAlg)?.size
    if (size === undefined) throw tlError('ERR_INVALID_ARGUMENT', `pcrRead: hash algorithm 0x${hashAlg.toString(16)} is not supported`)
    for (let attempt = 0; attempt < 4; attempt++) {
      const out = new Map<number, Uint8Array>()
      let counter: number | undefined
      let remaining = wanted
      let consistent = true
      while (remaining.length > 0) {
        const p = new TpmWriter(16)
        writePcrSelection(p, [{ hashAlg, pcrs: remaining }])
        const { params } = await this.execute(TPM_CC.PCR_Read, { params: p.finish() })
        const updateCounter = params.u32('pcrUpdateCounter')
        const selection = readPcrSelection(params, 'pcrSelectionOut')
        const digests = readDigestList(params, 'pcrValues')
        params.end()
        if (counter !== undefined && counter !== updateCounter) {
          consistent = false
          break
        }
        counter = updateCounter
        const got: number[] = []
        for (const s of selection) {
          if (s.hashAlg !== hashAlg && s.pcrs.length > 0) throw malformed(`TPM2_PCR_Read: values of bank 0x${s.hashAlg.toString(16)} that was not asked for`)
          got.push(...s.pcrs)
        }
        if (got.length !== digests.length) throw malformed(`TPM2_PCR_Read: ${got.length} PCRs selected but ${digests.length} digests`)
        if (got.length === 0) {
          throw tlError('ERR_INVALID_ARGUMENT', `the TPM has no values for PCRs ${remaining.join(',')} in bank 0x${hashAlg.toString(16)} (not allocated?)`)
        }
        got.forEach((pcr, i) => {
          const d = digests[i]!
          if (!remaining.includes(pcr) || out.has(pcr)) throw malformed(`TPM2_PCR_Read: PCR ${pcr} was not asked for`)
          if (d.length !== size) throw malformed(`TPM2_PCR_Read: PCR ${pcr} value is ${d.length} bytes, expected ${size}`)
          out.set(pcr, d.slice())
        })
        remaining = remaining.filter((p) => !out.has(p))
      }
      if (consistent) return out
    }
    throw tlError('ERR_TIMEOUT', 'TPM2_PCR_Read: the PCRs kept changing between pages of one read')
  }

  /** TPM2_PCR_Extend of one PCR with one digest per bank (default: a SHA-256 digest). */
  async pcrExtend(
    pcr: number,
    digests: Uint8Array | ReadonlyArray<{ hashAlg: number; digest: Uint8Array }>,
    auth: AuthSession = passwordAuth(),
  ): Promise<void> {
    normalizePcrs([pcr])
    const list = digests instanceof Uint8Array ? [{ hashAlg: TPM_ALG.SHA256, digest: digests }] : digests
    const w = new TpmWriter(64).u32(list.length)
    for (const { hashAlg, digest } of list) {
      const size = HASH_ALGS.get(hashAlg)?.size
      if (size === undefined || digest.length !== size) throw tlError('ERR_INVALID_ARGUMENT', `pcrExtend: the 0x${hashAlg.toString(16)} digest must be ${size ?? '?'} bytes`)
      w.u16(hashAlg).bytes(digest)
    }
    ;(await this.execute(TPM_CC.PCR_Extend, { handles: [pcr], auths: [auth], params: w.finish() })).params.end()
  }

  // -------------------------------------------------------------------------------------------
  // Objects

  static #creationParams(template: TpmtPublic, userAuth: Uint8Array, data: Uint8Array): Uint8Array {
    checkBytes('userAuth', userAuth, 64)
    checkBytes('sensitive data', data, TPM_MAX_SYM_DATA)
    const w = new TpmWriter(256)
    w.sized((s) => s.tpm2b(userAuth).tpm2b(data)) // TPM2B_SENSITIVE_CREATE
    w.sized((s) => writePublic(s, template)) // TPM2B_PUBLIC
    w.tpm2b(EMPTY) // outsideInfo
    w.u32(0) // creationPCR: none
    return w.finish()
  }

  static #skipCreationOutputs(r: TpmReader): void {
    r.tpm2bRaw('creationData')
    r.tpm2b('creationHash', 64)
    r.u16('creationTicket.tag')
    r.u32('creationTicket.hierarchy')
    r.tpm2b('creationTicket.digest', 64)
  }

  /**
   * TPM2_CreatePrimary under a hierarchy (default owner, password auth). Primaries are
   * deterministic: the same template under the same seed gives the same key (and Name).
   */
  async createPrimary(
    template: TpmtPublic = srkTemplate(),
    options: { hierarchy?: number; userAuth?: Uint8Array; data?: Uint8Array; auth?: AuthSession } = {},
  ): Promise<PrimaryObject> {
    const params = TpmClient.#creationParams(template, options.userAuth ?? EMPTY, options.data ?? EMPTY)
    return this.#withNewHandle(
      TPM_CC.CreatePrimary,
      { handles: [options.hierarchy ?? TPM_RH.OWNER], auths: [options.auth ?? passwordAuth()], params },
      (handle, r) => {
        const pub = r.tpm2bRaw('outPublic').slice()
        TpmClient.#skipCreationOutputs(r)
        const name = r.tpm2b('name', 66).slice()
        return { handle, public: pub, name }
      },
    )
  }

  /** TPM2_Create under a loaded parent: returns the TPM2B_PUBLIC and TPM2B_PRIVATE blobs (nothing is loaded). */
  async create(
    parent: number,
    template: TpmtPublic,
    options: { userAuth?: Uint8Array; data?: Uint8Array; parentAuth?: AuthSession } = {},
  ): Promise<KeyBlobs> {
    const params = TpmClient.#creationParams(template, options.userAuth ?? EMPTY, options.data ?? EMPTY)
    const { params: r } = await this.execute(TPM_CC.Create, { handles: [parent], auths: [options.parentAuth ?? passwordAuth()], params })
    const priv = r.tpm2bRaw('outPrivate').slice()
    const pub = r.tpm2bRaw('outPublic').slice()
    TpmClient.#skipCreationOutputs(r)
    r.end()
    return { public: pub, private: priv }
  }

  /** TPM2_Load of blobs from {@link create} under their parent. Checks the Name the TPM returns. */
  async load(parent: number, blobs: KeyBlobs, parentAuth: AuthSession = passwordAuth()): Promise<LoadedObject> {
    checkBlob('the public blob', blobs.public)
    checkBlob('the private blob', blobs.private)
    const expected = objectName(publicArea(blobs.public))
    const params = new TpmWriter(blobs.public.length + blobs.private.length).bytes(blobs.private).bytes(blobs.public).finish()
    return this.#withNewHandle(TPM_CC.Load, { handles: [parent], auths: [parentAuth], params }, (handle, r) => {
      const name = r.tpm2b('name', 66).slice()
      if (Buffer.compare(name, expected) !== 0) throw malformed('TPM2_Load: the Name the TPM returned does not match the public blob')
      return { handle, name }
    })
  }

  /** TPM2_ReadPublic: the TPM2B_PUBLIC bytes, Name and qualified Name of a loaded or persistent object. */
  async readPublic(handle: number): Promise<{ public: Uint8Array; name: Uint8Array; qualifiedName: Uint8Array }> {
    const { params: r } = await this.execute(TPM_CC.ReadPublic, { handles: [handle] })
    const pub = r.tpm2bRaw('outPublic').slice()
    const name = r.tpm2b('name', 66).slice()
    const qualifiedName = r.tpm2b('qualifiedName', 66).slice()
    r.end()
    return { public: pub, name, qualifiedName }
  }

  /** TPM2_FlushContext of a transient object or session. */
  async flushContext(handle: number): Promise<void> {
    ;(await this.execute(TPM_CC.FlushContext, { params: new TpmWriter(4).u32(handle).finish() })).params.end()
  }

  /**
   * TPM2_EvictControl: makes a transient object persistent at `persistentHandle` (0x81xxxxxx),
   * or, given a persistent object and its own handle, removes it. Owner hierarchy, password auth.
   */
  async evictControl(object: number, persistentHandle: number, auth: AuthSession = passwordAuth()): Promise<void> {
    if (persistentHandle >>> 24 !== TPM_HT.PERSISTENT >>> 24) throw tlError('ERR_INVALID_ARGUMENT', `evictControl: ${hex(persistentHandle)} is not a persistent handle`)
    const p = new TpmWriter(4).u32(persistentHandle).finish()
    ;(await this.execute(TPM_CC.EvictControl, { handles: [TPM_RH.OWNER, object], auths: [auth], params: p })).params.end()
  }

  // -------------------------------------------------------------------------------------------
  // Signing and attestation

  /**
   * TPM2_Sign of a digest (e.g. SHA-256 of the data for an ECDSA/SHA-256 key) with a
   * non-restricted key; `scheme` null (default) uses the key's own scheme. Null hash-check ticket.
   */
  async sign(key: number, digest: Uint8Array, options: { auth?: AuthSession; scheme?: Scheme | null } = {}): Promise<TpmSignature> {
    checkBytes('digest', digest, 64)
    const w = new TpmWriter(64).tpm2b(digest)
    writeSigScheme(w, options.scheme ?? null)
    w.u16(TPM_ST.HASHCHECK).u32(TPM_RH.NULL).tpm2b(EMPTY)
    const { params: r } = await this.execute(TPM_CC.Sign, { handles: [key], auths: [options.auth ?? passwordAuth()], params: w.finish() })
    const sig = readSignature(r)
    r.end()
    return sig
  }

  /** TPM2_Quote of PCRs (SHA-256 bank for a list of indices) with an attestation key; qualifyingData ≤ 64 bytes (a nonce). */
  async quote(
    ak: number,
    qualifyingData: Uint8Array,
    pcrs: readonly number[] | readonly PcrSelection[],
    options: { auth?: AuthSession; scheme?: Scheme | null } = {},
  ): Promise<AttestResult> {
    checkBytes('qualifyingData', qualifyingData, 64)
    const w = new TpmWriter(64).tpm2b(qualifyingData)
    writeSigScheme(w, options.scheme ?? null)
    writePcrSelection(w, selectionOf(pcrs))
    const { params: r } = await this.execute(TPM_CC.Quote, { handles: [ak], auths: [options.auth ?? passwordAuth()], params: w.finish() })
    return TpmClient.#readAttestResult(r)
  }

  /** TPM2_Certify: the attestation key `ak` certifies that `object` is loaded in this TPM (its Name). */
  async certify(
    object: number,
    ak: number,
    qualifyingData: Uint8Array,
    options: { objectAuth?: AuthSession; akAuth?: AuthSession; scheme?: Scheme | null } = {},
  ): Promise<AttestResult> {
    checkBytes('qualifyingData', qualifyingData, 64)
    const w = new TpmWriter(64).tpm2b(qualifyingData)
    writeSigScheme(w, options.scheme ?? null)
    const { params: r } = await this.execute(TPM_CC.Certify, {
      handles: [object, ak],
      auths: [options.objectAuth ?? passwordAuth(), options.akAuth ?? passwordAuth()],
      params: w.finish(),
    })
    return TpmClient.#readAttestResult(r)
  }

  static #readAttestResult(r: TpmReader): AttestResult {
    const attest = r.tpm2b('TPM2B_ATTEST').slice()
    const signature = readSignature(r)
    r.end()
    return { attest, signature }
  }

  // -------------------------------------------------------------------------------------------
  // Sessions, policies, sealing

  /** TPM2_StartAuthSession: an unsalted, unbound policy (or trial) session with a SHA-256 policy digest. */
  async startAuthSession(type: 'policy' | 'trial' = 'policy', hashAlg: number = TPM_ALG.SHA256): Promise<{ handle: number; nonceTPM: Uint8Array }> {
    const size = HASH_ALGS.get(hashAlg)?.size
    if (size === undefined) throw tlError('ERR_INVALID_ARGUMENT', 'startAuthSession: unsupported hash algorithm')
    const w = new TpmWriter(64)
    w.tpm2b(randomBytes(size)) // nonceCaller
    w.tpm2b(EMPTY) // encryptedSalt
    w.u8(type === 'policy' ? TPM_SE.POLICY : TPM_SE.TRIAL)
    w.u16(TPM_ALG.NULL) // symmetric: none
    w.u16(hashAlg)
    return this.#withNewHandle(
      TPM_CC.StartAuthSession,
      { handles: [TPM_RH.NULL, TPM_RH.NULL], params: w.finish() },
      (handle, r) => ({ handle, nonceTPM: r.tpm2b('nonceTPM', 64).slice() }),
    )
  }

  /** TPM2_PolicyPCR: an empty `pcrDigest` (default) means "the PCRs' current values". */
  async policyPCR(session: number, pcrs: readonly number[] | readonly PcrSelection[], pcrDigest: Uint8Array = EMPTY): Promise<void> {
    checkBytes('pcrDigest', pcrDigest, 64)
    const w = new TpmWriter(32).tpm2b(pcrDigest)
    writePcrSelection(w, selectionOf(pcrs))
    ;(await this.execute(TPM_CC.PolicyPCR, { handles: [session], params: w.finish() })).params.end()
  }

  /** TPM2_PolicyGetDigest: the session's current policy digest. */
  async policyGetDigest(session: number): Promise<Uint8Array> {
    const { params: r } = await this.execute(TPM_CC.PolicyGetDigest, { handles: [session] })
    const d = r.tpm2b('policyDigest', 64).slice()
    r.end()
    return d
  }

  /** TPM2_Unseal of a loaded sealed data object, with a password or a policy session. */
  async unseal(item: number, auth: AuthSession = passwordAuth()): Promise<Uint8Array> {
    const { params: r } = await this.execute(TPM_CC.Unseal, { handles: [item], auths: [auth] })
    const d = r.tpm2b('outData', TPM_MAX_SYM_DATA).slice()
    r.end()
    return d
  }

  /**
   * TPM2_PolicySecret: asserts knowledge of `authHandle`'s auth value (default: TPM_RH_ENDORSEMENT
   * with its empty password) in the policy session `session`. No nonce, cpHash, policyRef or
   * expiration: the session's policy digest becomes `H(digest ‖ u32 CC_PolicySecret ‖ Name(auth)) → H(· ‖ empty)`.
   */
  async policySecret(session: number, authHandle: number = TPM_RH.ENDORSEMENT, auth: AuthSession = passwordAuth()): Promise<void> {
    const w = new TpmWriter(16)
    w.tpm2b(EMPTY) // nonceTPM
    w.tpm2b(EMPTY) // cpHashA
    w.tpm2b(EMPTY) // policyRef
    w.u32(0) // expiration (INT32 0: no ticket)
    const { params: r } = await this.execute(TPM_CC.PolicySecret, { handles: [authHandle, session], auths: [auth], params: w.finish() })
    r.tpm2b('timeout', 64)
    r.u16('policyTicket.tag')
    r.u32('policyTicket.hierarchy')
    r.tpm2b('policyTicket.digest', 64)
    r.end()
  }

  /**
   * TPM2_ActivateCredential: `keyHandle` (the EK) decrypts the seed in `encryptedSecret`, the TPM
   * checks the credential's integrity HMAC against the Name of `activateHandle` (the AK) and
   * returns the secret. Both blobs are TPM2B wire bytes (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET,
   * size prefix included). A credential made for another Name or another EK fails with `ERR_TPM`
   * (TPM_RC_INTEGRITY, or TPM_RC_ECC_POINT / TPM_RC_VALUE for a seed that does not decrypt).
   */
  async activateCredential(
    activateHandle: number,
    keyHandle: number,
    credentialBlob: Uint8Array,
    encryptedSecret: Uint8Array,
    auths: { activateAuth?: AuthSession; keyAuth: AuthSession },
  ): Promise<Uint8Array> {
    checkBlob('the credential blob (TPM2B_ID_OBJECT)', credentialBlob)
    checkBlob('the encrypted secret (TPM2B_ENCRYPTED_SECRET)', encryptedSecret)
    const params = new TpmWriter(credentialBlob.length + encryptedSecret.length).bytes(credentialBlob).bytes(encryptedSecret).finish()
    const { params: r } = await this.execute(TPM_CC.ActivateCredential, {
      handles: [activateHandle, keyHandle],
      auths: [auths.activateAuth ?? passwordAuth(), auths.keyAuth],
      params,
    })
    const certInfo = r.tpm2b('certInfo', 64).slice()
    r.end()
    return certInfo
  }

  /** TPM2_NV_ReadPublic: an NV index's attributes and data size (an index that is not defined is `ERR_TPM` TPM_RC_HANDLE). */
  async nvReadPublic(nvIndex: number): Promise<{ nameAlg: number; attributes: number; authPolicy: Uint8Array; dataSize: number; name: Uint8Array }> {
    const { params: r } = await this.execute(TPM_CC.NV_ReadPublic, { handles: [nvIndex] })
    const pub = new TpmReader(r.tpm2b('nvPublic', 256), 'TPMS_NV_PUBLIC')
    const index = pub.u32('nvIndex')
    if (index !== nvIndex) throw malformed(`TPM2_NV_ReadPublic: asked for ${hex(nvIndex)}, got ${hex(index)}`)
    const nameAlg = pub.u16('nameAlg')
    const attributes = pub.u32('attributes')
    const authPolicy = pub.tpm2b('authPolicy', 64).slice()
    const dataSize = pub.u16('dataSize')
    pub.end()
    const name = r.tpm2b('nvName', 66).slice()
    r.end()
    return { nameAlg, attributes, authPolicy, dataSize, name }
  }

  /**
   * Reads `size` bytes of an NV index (TPM2_NV_Read in chunks of at most `chunk` bytes). The
   * authorization comes from `authHandle` (default the index itself, TPMA_NV_AUTHREAD; TPM_RH_OWNER
   * for TPMA_NV_OWNERREAD) with `auth` (default the empty password).
   */
  async nvRead(nvIndex: number, size: number, options: { authHandle?: number; auth?: AuthSession; chunk?: number } = {}): Promise<Uint8Array> {
    if (!Number.isInteger(size) || size < 0 || size > 0xffff) throw tlError('ERR_INVALID_ARGUMENT', 'nvRead: size must be an integer in [0, 65535]')
    const chunk = Math.max(1, Math.min(options.chunk ?? 512, 1024))
    const out = new Uint8Array(size)
    for (let off = 0; off < size; ) {
      const n = Math.min(chunk, size - off)
      const p = new TpmWriter(4).u16(n).u16(off).finish()
      const { params: r } = await this.execute(TPM_CC.NV_Read, {
        handles: [options.authHandle ?? nvIndex, nvIndex],
        auths: [options.auth ?? passwordAuth()],
        params: p,
      })
      const data = r.tpm2b('data', n)
      r.end()
      if (data.length === 0) throw malformed('TPM2_NV_Read returned no bytes')
      out.set(data, off)
      off += data.length
    }
    return out
  }

  /**
   * Creates the TCG ECC P-256 endorsement key ({@link ekTemplate}) under the endorsement
   * hierarchy (empty endorsement password by default). Deterministic: the same EK every time on a
   * given TPM. The caller flushes it (or use {@link withEk}).
   */
  async createEk(auth: AuthSession = passwordAuth()): Promise<PrimaryObject> {
    return this.createPrimary(ekTemplate(), { hierarchy: TPM_RH.ENDORSEMENT, auth })
  }

  /** Creates the EK, runs `fn`, flushes the EK. */
  async withEk<T>(fn: (ek: PrimaryObject) => Promise<T>, auth: AuthSession = passwordAuth()): Promise<T> {
    const ek = await this.createEk(auth)
    return this.withHandle(ek.handle, () => fn(ek))
  }

  /**
   * The whole activation with the TCG EK: creates the EK, starts a policy session, satisfies
   * PolicySecret(TPM_RH_ENDORSEMENT), runs TPM2_ActivateCredential with the loaded AK `ak`
   * (password `akAuth`, default empty), and flushes the session and the EK (in `finally` too).
   * Needs one free object slot besides the AK.
   */
  async activateCredentialWithEk(
    ak: number,
    credentialBlob: Uint8Array,
    encryptedSecret: Uint8Array,
    options: { akAuth?: AuthSession; endorsementAuth?: AuthSession } = {},
  ): Promise<Uint8Array> {
    checkBlob('the credential blob (TPM2B_ID_OBJECT)', credentialBlob)
    checkBlob('the encrypted secret (TPM2B_ENCRYPTED_SECRET)', encryptedSecret)
    return this.withEk(
      (ek) =>
        this.withPolicySession(async (session) => {
          await this.policySecret(session, TPM_RH.ENDORSEMENT, options.endorsementAuth ?? passwordAuth())
          return this.activateCredential(ak, ek.handle, credentialBlob, encryptedSecret, {
            keyAuth: policyAuth(session),
            ...(options.akAuth === undefined ? {} : { activateAuth: options.akAuth }),
          })
        }),
      options.endorsementAuth ?? passwordAuth(),
    )
  }

  // -------------------------------------------------------------------------------------------
  // Flows that flush what they create

  /** Runs `fn` with a transient object or session, and flushes it in `finally`. */
  async withHandle<T>(handle: number, fn: (handle: number) => Promise<T>): Promise<T> {
    let ok = false
    try {
      const out = await fn(handle)
      ok = true
      return out
    } finally {
      if (ok) await this.flushContext(handle)
      else await this.flushContext(handle).catch(() => {})
    }
  }

  /** Creates a primary (default: the ECC P-256 SRK under the owner hierarchy), runs `fn`, flushes it. */
  async withPrimary<T>(fn: (primary: PrimaryObject) => Promise<T>, template: TpmtPublic = srkTemplate(), hierarchy: number = TPM_RH.OWNER): Promise<T> {
    const primary = await this.createPrimary(template, { hierarchy })
    return this.withHandle(primary.handle, () => fn(primary))
  }

  /** Loads blobs under `parent`, runs `fn`, flushes the object. */
  async withLoaded<T>(parent: number, blobs: KeyBlobs, fn: (object: LoadedObject) => Promise<T>): Promise<T> {
    const obj = await this.load(parent, blobs)
    return this.withHandle(obj.handle, () => fn(obj))
  }

  /** Starts a policy session, runs `fn`, flushes the session. */
  async withPolicySession<T>(fn: (session: number) => Promise<T>): Promise<T> {
    const { handle } = await this.startAuthSession('policy')
    return this.withHandle(handle, fn)
  }

  /**
   * Seals `secret` (≤ 128 bytes) under `parent` as a keyedhash data object. With `pcrs`, its
   * authPolicy is PolicyPCR over those SHA-256 PCRs at their current values (or `pcrValues`),
   * computed offline; without, it unseals with its empty password.
   */
  async seal(
    parent: number,
    secret: Uint8Array,
    options: { pcrs?: readonly number[]; pcrValues?: ReadonlyMap<number, Uint8Array>; noDA?: boolean } = {},
  ): Promise<KeyBlobs & { policy: Uint8Array }> {
    checkBytes('secret', secret, TPM_MAX_SYM_DATA)
    let policy: Uint8Array = EMPTY
    if (options.pcrs !== undefined && options.pcrs.length > 0) {
      const pcrs = normalizePcrs(options.pcrs)
      const values = options.pcrValues ?? (await this.pcrRead(pcrs))
      policy = policyPcrDigest(pcrs, values)
    }
    const template = sealedDataTemplate({ policy, ...(options.noDA === undefined ? {} : { noDA: options.noDA }) })
    const blobs = await this.create(parent, template, { data: secret })
    return { ...blobs, policy }
  }

  /**
   * Loads a sealed object under `parent` and unseals it: through a policy session satisfying
   * PolicyPCR over `pcrs` when given, else with its (empty) password. Flushes both in `finally`.
   * A PCR that changed since sealing gives `ERR_TPM` TPM_RC_POLICY_FAIL (0x99D, session 1).
   */
  async unsealBlobs(parent: number, blobs: KeyBlobs, pcrs?: readonly number[]): Promise<Uint8Array> {
    return this.withLoaded(parent, blobs, async ({ handle }) => {
      if (pcrs === undefined || pcrs.length === 0) return this.unseal(handle)
      return this.withPolicySession(async (session) => {
        await this.policyPCR(session, pcrs)
        return this.unseal(handle, policyAuth(session))
      })
    })
  }

  /**
   * Flushes every transient object and loaded session (a crashed run's leftovers on a TPM
   * without a resource manager). Returns how many handles were flushed.
   */
  async flushTransients(): Promise<number> {
    let n = 0
    // HMAC_SESSION lists all loaded sessions (policy ones included, see getHandles).
    for (const type of [TPM_HT.TRANSIENT, TPM_HT.HMAC_SESSION]) {
      for (const h of await this.getHandles(type)) {
        try {
          await this.flushContext(h)
          n++
        } catch (err) {
          // Flushed meanwhile (another client on a shared TPM): nothing left to do.
          if (!isThroughlineError(err, 'ERR_TPM')) throw err
        }
      }
    }
    return n
  }

  /** Sends TPM2_Shutdown(CLEAR) (unless disabled) and closes the transport. Never throws for a failed Shutdown. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    try {
      if (this.#shutdownOnClose) await this.shutdown('clear').catch(() => {})
    } finally {
      await this.transport.close()
    }
  }
}
