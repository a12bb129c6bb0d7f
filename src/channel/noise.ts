/**
 * A pure, synchronous Noise engine (Noise Protocol Framework rev 34) for the suite
 * `25519_ChaChaPoly_SHA256`: no I/O, no timers. The handshake is driven by a table of patterns
 * (noise-patterns.ts: XX, NN, IK, XK, ... and pskN modifiers) and uses the spec's names:
 * CipherState, SymmetricState, HandshakeState, MixKey, MixHash, EncryptAndHash, DecryptAndHash,
 * Split.
 *
 * Failure policy:
 * - every failure inside `writeMessage`/`readMessage` (bad length, bad tag, all-zero DH,
 *   out-of-turn call, oversized message) is one ThroughlineError ERR_HANDSHAKE_FAILED naming the
 *   message number and the token, with the underlying error as `cause`;
 * - a failed call changes nothing: each message is computed on a draft of the state, committed
 *   only on success, so the same handshake can still accept the genuine message.
 *
 * ```ts
 * const i = createHandshake({ pattern: 'XX', initiator: true, staticKeyPair: generateKeyPair() })
 * const r = createHandshake({ pattern: 'XX', initiator: false, staticKeyPair: generateKeyPair() })
 * r.readMessage(i.writeMessage())          // -> e
 * i.readMessage(r.writeMessage())          // <- e, ee, s, es
 * r.readMessage(i.writeMessage())          // -> s, se
 * const { send, receive } = i.split()
 * ```
 *
 * @module
 */
import { ThroughlineError } from '../errors.ts'
import { CipherState } from './cipher-state.ts'
import { DHLEN, HASHLEN, NOISE_MAX_MESSAGE, TAGLEN } from './constants.ts'
import { getCrypto } from './crypto/index.ts'
import type { CryptoProvider, CryptoSpec, KeyPair } from './crypto/types.ts'
import { parsePattern, type HandshakePattern, type PatternName, type Token } from './noise-patterns.ts'

export { CipherState }
export type { CryptoProvider, CryptoSpec, KeyPair, PatternName }

const EMPTY = new Uint8Array(0)

/** The suffix of every protocol name this engine speaks (DH, cipher and hash functions). */
export const PROTOCOL_SUFFIX = '_25519_ChaChaPoly_SHA256'

/** `Noise_<pattern>_25519_ChaChaPoly_SHA256` (§8). */
export function protocolName(pattern: PatternName): string {
  return `Noise_${pattern}${PROTOCOL_SUFFIX}`
}

/** GENERATE_KEYPAIR() of the chosen provider (default `node`). */
export function generateKeyPair(crypto?: CryptoSpec): KeyPair {
  return getCrypto(crypto).generateKeyPair()
}

/** The key pair of an existing 32-byte X25519 secret key (the secret is used, not copied). */
export function keyPairFromSecretKey(secretKey: Uint8Array, crypto?: CryptoSpec): KeyPair {
  const provider = getCrypto(crypto)
  if (!provider.publicKeyFromSecret) {
    throw new ThroughlineError('ERR_INVALID_ARGUMENT', `crypto provider ${provider.name} cannot derive public keys`)
  }
  return { publicKey: provider.publicKeyFromSecret(secretKey), secretKey }
}

/** Options of {@link createHandshake}. */
export interface HandshakeOptions {
  /** Handshake pattern, e.g. `XX` (the channel's), `NN`, `IK`, `XK`, `XXpsk3`. */
  pattern: PatternName
  /** True for the initiator (the party sending the first message). */
  initiator: boolean
  /** Our long-term X25519 key pair; required when the pattern uses our static key. */
  staticKeyPair?: KeyPair
  /** Prologue (§6): data both parties must agree on, mixed into h. Default: empty. */
  prologue?: Uint8Array
  /** The peer's static public key, for patterns with a pre-message from the peer (IK, XK, NK, KK...). */
  remoteStaticKey?: Uint8Array
  /** Pre-shared 32-byte keys, one per psk token in order (§9). */
  psks?: readonly Uint8Array[]
  /** TESTS ONLY: a fixed ephemeral key pair instead of a fresh random one (copied). */
  ephemeralKeyPair?: KeyPair
  /** Crypto backend: `node` (default), `portable`, or a provider object. */
  crypto?: CryptoSpec
}

/** The two transport CipherStates of a completed handshake, oriented for this party. */
export interface SplitResult {
  send: CipherState
  receive: CipherState
}

/** A HandshakeState (§5.3) behind a small, failure-atomic API. */
export interface Handshake {
  /** `Noise_<pattern>_25519_ChaChaPoly_SHA256`. */
  readonly protocolName: string
  /** WriteMessage(payload): the next handshake message. Throws ERR_HANDSHAKE_FAILED. */
  writeMessage(payload?: Uint8Array): Uint8Array
  /** ReadMessage(message): the peer's payload. Throws ERR_HANDSHAKE_FAILED, and then changes nothing. */
  readMessage(message: Uint8Array): Uint8Array
  /** What the pattern expects next from this party. */
  nextStep(): 'write' | 'read' | 'complete'
  /** True once every message of the pattern was written or read. */
  isComplete(): boolean
  /** A copy of h: the handshake hash (channel binding) once complete; valid at any point. */
  handshakeHash(): Uint8Array
  /**
   * Runs the tokens of the next message this party writes (e.g. "e, ee, s, es") and returns h at
   * the point where its payload will be encrypted (h2* / h3* of the attestation handle rule), so
   * the payload may depend on it. The next {@link writeMessage} continues from there. Throws
   * ERR_HANDSHAKE_FAILED (and then changes nothing).
   */
  prepareWrite(): Uint8Array
  /** A copy of h just before the payload of the last message written or read (undefined before). */
  payloadHash(): Uint8Array | undefined
  /** A copy of the peer's static public key, once known. */
  remoteStaticKey(): Uint8Array | undefined
  /**
   * Split() (§5.2): the transport CipherStates, initiator sends with k1 and receives with k2.
   * Once, after completion; throws ERR_HANDSHAKE_FAILED otherwise.
   */
  split(): SplitResult
  /** Wipe every secret this handshake holds (ephemeral key, ck, k, unsplit transport keys). */
  destroy(): void
}

/**
 * SymmetricState (§5.2), value-style: operations replace `ck`, `h` and `k` with new arrays and
 * never write into old ones, so a shallow {@link SymmetricState.clone} is a safe draft. A draft
 * wipes only the keys it made itself; the committed ones are wiped by the HandshakeState.
 */
class SymmetricState {
  readonly crypto: CryptoProvider
  ck: Uint8Array
  h: Uint8Array
  /** The CipherState of the handshake: key (undefined = empty) and counter. */
  k: Uint8Array | undefined
  n: bigint
  /** True once ck and k are arrays this object made (not shared with the state it was cloned from). */
  ownsKeys = false

  constructor(crypto: CryptoProvider, ck: Uint8Array, h: Uint8Array, k: Uint8Array | undefined, n: bigint) {
    this.crypto = crypto
    this.ck = ck
    this.h = h
    this.k = k
    this.n = n
  }

  /** InitializeSymmetric(protocol_name). */
  static initialize(crypto: CryptoProvider, name: string): SymmetricState {
    const bytes = new TextEncoder().encode(name)
    let h: Uint8Array
    if (bytes.length <= HASHLEN) {
      h = new Uint8Array(HASHLEN) // protocol_name padded with zeros
      h.set(bytes)
    } else {
      h = crypto.sha256(bytes)
    }
    return new SymmetricState(crypto, h.slice(), h, undefined, 0n) // ck = h
  }

  clone(): SymmetricState {
    return new SymmetricState(this.crypto, this.ck, this.h, this.k, this.n)
  }

  /** MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k). */
  mixKey(ikm: Uint8Array): void {
    const [ck, k] = this.crypto.hkdf(this.ck, ikm, 2)
    this.#replaceKeys(ck, k)
  }

  /** Install a new ck and k, wiping the previous ones when this draft made them. */
  #replaceKeys(ck: Uint8Array, k: Uint8Array): void {
    if (this.ownsKeys) this.wipeKeys()
    this.ck = ck
    this.k = k
    this.n = 0n
    this.ownsKeys = true
  }

  /** Zero ck and k (h is public and stays). */
  wipeKeys(): void {
    this.ck.fill(0)
    this.k?.fill(0)
  }

  /** MixHash(data): h = HASH(h || data). */
  mixHash(data: Uint8Array): void {
    this.h = this.crypto.sha256(this.h, data)
  }

  /** MixKeyAndHash(ikm): ck, temp_h, temp_k = HKDF(ck, ikm, 3); MixHash(temp_h); InitializeKey(temp_k). */
  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, k] = this.crypto.hkdf(this.ck, ikm, 3)
    this.mixHash(tempH)
    this.#replaceKeys(ck, k)
  }

  /** EncryptAndHash(plaintext): ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.k === undefined ? plaintext.slice() : this.crypto.aeadSeal(this.k, this.n++, this.h, plaintext)
    this.mixHash(ciphertext)
    return ciphertext
  }

  /** DecryptAndHash(ciphertext): plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.k === undefined ? ciphertext.slice() : this.crypto.aeadOpen(this.k, this.n, this.h, ciphertext)
    if (this.k !== undefined) this.n++
    this.mixHash(ciphertext)
    return plaintext
  }

  /** Split(): temp_k1, temp_k2 = HKDF(ck, zerolen, 2). */
  split(): [Uint8Array, Uint8Array] {
    return this.crypto.hkdf(this.ck, EMPTY, 2)
  }
}

/** The mutable part of a HandshakeState, copied into a draft for each message. */
interface Draft {
  ss: SymmetricState
  e: KeyPair | undefined
  re: Uint8Array | undefined
  rs: Uint8Array | undefined
  psk: number
  /** What is being processed, for the error message: a token, 'payload', 'split'... */
  stage: string
}

/** 'es' → 'token es'; other stages as they are. */
function stageName(stage: string): string {
  return /^(e|s|ee|es|se|ss|psk)$/.test(stage) ? `token ${stage}` : stage
}

/** An internal reason for a handshake failure (wrapped into ERR_HANDSHAKE_FAILED). */
class HandshakeReason extends Error {}

function checkKey(what: string, key: Uint8Array | undefined): void {
  if (!(key instanceof Uint8Array) || key.length !== DHLEN) {
    throw new ThroughlineError('ERR_INVALID_ARGUMENT', `${what} must be a Uint8Array of ${DHLEN} bytes`)
  }
}

/** HandshakeState (§5.3). */
class HandshakeState implements Handshake {
  readonly protocolName: string
  readonly #crypto: CryptoProvider
  readonly #pattern: HandshakePattern
  readonly #initiator: boolean
  readonly #s: KeyPair | undefined
  readonly #psks: readonly Uint8Array[]
  readonly #fixedE: KeyPair | undefined
  #state: Draft
  #index = 0
  #result: [Uint8Array, Uint8Array] | undefined
  #splitTaken = false
  #destroyed = false
  /** A write whose tokens ran in prepareWrite(), waiting for its payload. */
  #pending: { draft: Draft; parts: Uint8Array[] } | undefined
  /** h just before the payload of the last message (the arrays are never written into). */
  #payloadH: Uint8Array | undefined

  constructor(o: HandshakeOptions) {
    if (typeof o !== 'object' || o === null) throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'options required')
    this.#crypto = getCrypto(o.crypto)
    this.#pattern = parsePattern(o.pattern)
    this.#initiator = o.initiator === true
    this.protocolName = protocolName(o.pattern)
    const pattern = this.#pattern
    const peerPre = this.#initiator ? pattern.preResponder : pattern.preInitiator
    if (this.#initiator ? pattern.initiatorStatic : pattern.responderStatic) {
      checkKey('staticKeyPair.secretKey', o.staticKeyPair?.secretKey)
      checkKey('staticKeyPair.publicKey', o.staticKeyPair?.publicKey)
      this.#s = o.staticKeyPair
    }
    let rs: Uint8Array | undefined
    if (peerPre.includes('s')) {
      checkKey('remoteStaticKey', o.remoteStaticKey)
      rs = Uint8Array.from(o.remoteStaticKey!)
    } else if (o.remoteStaticKey !== undefined) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', `pattern ${pattern.name} has no pre-message with the peer's static key`)
    }
    const psks = o.psks ?? []
    if (psks.length !== pattern.pskCount) {
      throw new ThroughlineError('ERR_INVALID_ARGUMENT', `pattern ${pattern.name} needs ${pattern.pskCount} psks`)
    }
    for (const psk of psks) checkKey('a psk', psk)
    this.#psks = psks
    if (o.ephemeralKeyPair !== undefined) {
      checkKey('ephemeralKeyPair.secretKey', o.ephemeralKeyPair.secretKey)
      checkKey('ephemeralKeyPair.publicKey', o.ephemeralKeyPair.publicKey)
      const { publicKey, secretKey } = o.ephemeralKeyPair
      this.#fixedE = { publicKey: Uint8Array.from(publicKey), secretKey: Uint8Array.from(secretKey) }
    }
    const prologue = o.prologue ?? EMPTY
    if (!(prologue instanceof Uint8Array)) throw new ThroughlineError('ERR_INVALID_ARGUMENT', 'prologue must be a Uint8Array')

    // Initialize(): InitializeSymmetric(protocol_name); MixHash(prologue); pre-message keys.
    const ss = SymmetricState.initialize(this.#crypto, this.protocolName)
    ss.mixHash(prologue)
    for (const [pre, mine] of [[pattern.preInitiator, this.#initiator], [pattern.preResponder, !this.#initiator]] as const) {
      for (const token of pre) {
        /* c8 ignore next -- the pattern table has only s in pre-messages */
        if (token !== 's') throw new ThroughlineError('ERR_INVALID_ARGUMENT', `pre-message token ${token} is not supported`)
        ss.mixHash(mine ? this.#s!.publicKey : rs!)
      }
    }
    this.#state = { ss, e: undefined, re: undefined, rs, psk: 0, stage: 'start' }
  }

  nextStep(): 'write' | 'read' | 'complete' {
    if (this.isComplete()) return 'complete'
    return (this.#index % 2 === 0) === this.#initiator ? 'write' : 'read'
  }

  isComplete(): boolean {
    return this.#index === this.#pattern.messages.length
  }

  handshakeHash(): Uint8Array {
    return this.#state.ss.h.slice()
  }

  remoteStaticKey(): Uint8Array | undefined {
    return this.#state.rs?.slice()
  }

  prepareWrite(): Uint8Array {
    if (this.#pending !== undefined) return this.#pending.draft.ss.h.slice()
    const number = this.#index + 1
    const draft: Draft = { ...this.#state, ss: this.#state.ss.clone(), stage: 'start' }
    try {
      this.#checkTurn('write')
      const parts = this.#writeTokens(draft, this.#pattern.messages[this.#index]!)
      this.#pending = { draft, parts }
      return draft.ss.h.slice()
    } catch (err) {
      throw this.#failDraft(draft, err, 'write', number)
    }
  }

  payloadHash(): Uint8Array | undefined {
    return this.#payloadH?.slice()
  }

  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    const pending = this.#pending
    this.#pending = undefined
    return this.#step(
      'write',
      (d, tokens) => {
        if (!(payload instanceof Uint8Array)) throw new HandshakeReason('the payload must be a Uint8Array')
        const parts = pending !== undefined ? pending.parts : this.#writeTokens(d, tokens)
        d.stage = 'payload'
        this.#payloadH = d.ss.h
        // buffer.append(EncryptAndHash(payload))
        parts.push(d.ss.encryptAndHash(payload))
        let length = 0
        for (const part of parts) length += part.length
        if (length > NOISE_MAX_MESSAGE) throw new HandshakeReason(`the message would have ${length} bytes, over ${NOISE_MAX_MESSAGE}`)
        const message = new Uint8Array(length)
        let offset = 0
        for (const part of parts) {
          message.set(part, offset)
          offset += part.length
        }
        return message
      },
      pending?.draft,
    )
  }

  /** The tokens of a message this party writes, on draft `d`; returns the message parts so far. */
  #writeTokens(d: Draft, tokens: readonly Token[]): Uint8Array[] {
    const parts: Uint8Array[] = []
    for (const token of tokens) {
      d.stage = token
      if (token === 'e') {
        // e = GENERATE_KEYPAIR(); buffer.append(e.public_key); MixHash(e.public_key)
        d.e = this.#fixedE ? { ...this.#fixedE, secretKey: this.#fixedE.secretKey.slice() } : this.#crypto.generateKeyPair()
        parts.push(d.e.publicKey)
        d.ss.mixHash(d.e.publicKey)
        if (this.#pattern.pskCount > 0) d.ss.mixKey(d.e.publicKey) // §9.2
      } else if (token === 's') {
        // buffer.append(EncryptAndHash(s.public_key))
        parts.push(d.ss.encryptAndHash(this.#s!.publicKey))
      } else {
        this.#mixToken(d, token)
      }
    }
    return parts
  }

  readMessage(message: Uint8Array): Uint8Array {
    return this.#step('read', (d, tokens) => {
      if (!(message instanceof Uint8Array)) throw new HandshakeReason('the message must be a Uint8Array')
      if (message.length > NOISE_MAX_MESSAGE) throw new HandshakeReason(`${message.length} bytes is over ${NOISE_MAX_MESSAGE}`)
      let offset = 0
      const take = (n: number): Uint8Array => {
        if (offset + n > message.length) throw new HandshakeReason(`the message is too short (${message.length} bytes)`)
        return message.subarray(offset, (offset += n))
      }
      for (const token of tokens) {
        d.stage = token
        if (token === 'e') {
          // re = next DHLEN bytes; MixHash(re.public_key)
          d.re = take(DHLEN).slice()
          d.ss.mixHash(d.re)
          if (this.#pattern.pskCount > 0) d.ss.mixKey(d.re) // §9.2
        } else if (token === 's') {
          // temp = next DHLEN + 16 bytes if HasKey() else DHLEN; rs = DecryptAndHash(temp)
          d.rs = d.ss.decryptAndHash(take(d.ss.k === undefined ? DHLEN : DHLEN + TAGLEN))
        } else {
          this.#mixToken(d, token)
        }
      }
      d.stage = 'payload'
      const h = d.ss.h
      // payload = DecryptAndHash(remaining bytes)
      const payload = d.ss.decryptAndHash(message.subarray(offset))
      this.#payloadH = h
      return payload
    })
  }

  split(): SplitResult {
    if (this.#result === undefined) {
      const why = this.#splitTaken ? 'split() was already called' : this.#destroyed ? 'the handshake was destroyed' : 'the handshake is not complete'
      throw new ThroughlineError('ERR_HANDSHAKE_FAILED', `${this.protocolName}: cannot split: ${why}`)
    }
    const [k1, k2] = this.#result
    const c1 = new CipherState(this.#crypto, k1)
    const c2 = new CipherState(this.#crypto, k2)
    k1.fill(0)
    k2.fill(0)
    this.#result = undefined
    this.#splitTaken = true
    return this.#initiator ? { send: c1, receive: c2 } : { send: c2, receive: c1 }
  }

  destroy(): void {
    this.#destroyed = true
    if (this.#pending !== undefined) {
      const { draft } = this.#pending
      this.#pending = undefined
      this.#failDraft(draft, new Error('destroyed'), 'write', this.#index + 1)
    }
    this.#wipeHandshakeSecrets()
    if (this.#fixedE) this.#wipeSecret(this.#fixedE.secretKey)
    for (const k of this.#result ?? []) k.fill(0)
    this.#result = undefined
  }

  /** The DH tokens (§5.3): MixKey(DH(..)) with the keys the token names for our role. */
  #mixToken(d: Draft, token: Token): void {
    if (token === 'psk') {
      // MixKeyAndHash(psk)
      d.ss.mixKeyAndHash(this.#psks[d.psk++]!)
      return
    }
    const i = this.#initiator
    let secret: Uint8Array | undefined
    let remote: Uint8Array | undefined
    switch (token) {
      case 'ee': // MixKey(DH(e, re))
        secret = d.e?.secretKey
        remote = d.re
        break
      case 'es': // initiator: MixKey(DH(e, rs)); responder: MixKey(DH(s, re))
        secret = i ? d.e?.secretKey : this.#s?.secretKey
        remote = i ? d.rs : d.re
        break
      case 'se': // initiator: MixKey(DH(s, re)); responder: MixKey(DH(e, rs))
        secret = i ? this.#s?.secretKey : d.e?.secretKey
        remote = i ? d.re : d.rs
        break
      case 'ss': // MixKey(DH(s, rs))
        secret = this.#s?.secretKey
        remote = d.rs
        break
      /* c8 ignore next 2 */
      default:
        throw new HandshakeReason(`unexpected token ${token}`)
    }
    /* c8 ignore next -- valid patterns always have the keys a DH token names */
    if (secret === undefined || remote === undefined) throw new HandshakeReason(`a key for ${token} is missing`)
    const shared = this.#crypto.dh(secret, remote)
    d.ss.mixKey(shared)
    shared.fill(0)
  }

  /**
   * Run one message on a draft of the state; commit it only when the whole message succeeded.
   * Every failure becomes ERR_HANDSHAKE_FAILED.
   */
  #step(kind: 'write' | 'read', run: (d: Draft, tokens: readonly Token[]) => Uint8Array, prepared?: Draft): Uint8Array {
    const number = this.#index + 1
    const draft: Draft = prepared ?? { ...this.#state, ss: this.#state.ss.clone(), stage: 'start' }
    try {
      if (kind === 'read' && this.#pending !== undefined) throw new HandshakeReason(`out of turn: this party must write message ${number}`)
      this.#checkTurn(kind)
      const out = run(draft, this.#pattern.messages[this.#index]!)
      let result: [Uint8Array, Uint8Array] | undefined
      if (this.#index + 1 === this.#pattern.messages.length) {
        draft.stage = 'split'
        result = draft.ss.split()
      }
      this.#commit(draft)
      this.#result = result
      return out
    } catch (err) {
      throw this.#failDraft(draft, err, kind, number)
    }
  }

  #checkTurn(kind: 'write' | 'read'): void {
    if (this.#destroyed) throw new HandshakeReason('the handshake was destroyed')
    const next = this.nextStep()
    if (next === 'complete') throw new HandshakeReason('the handshake is already complete')
    if (next !== kind) throw new HandshakeReason(`out of turn: this party must ${next} message ${this.#index + 1}`)
  }

  /** Wipe the secrets only the failed draft made (the committed state stays as it was); the error. */
  #failDraft(draft: Draft, err: unknown, kind: 'write' | 'read', number: number): ThroughlineError {
    if (draft.e !== undefined && draft.e !== this.#state.e) this.#wipeSecret(draft.e.secretKey)
    if (draft.ss.ownsKeys) draft.ss.wipeKeys()
    /* c8 ignore next -- everything thrown inside is an Error */
    const reason = err instanceof Error ? err.message : String(err)
    return new ThroughlineError('ERR_HANDSHAKE_FAILED', `${this.protocolName}: cannot ${kind} message ${number} (at ${stageName(draft.stage)}): ${reason}`, {
      cause: err,
      details: { message: number, stage: draft.stage, kind },
    })
  }

  /** Adopt a successful draft; wipe the chaining key and cipher key it superseded. */
  #commit(draft: Draft): void {
    if (draft.ss.ownsKeys) this.#state.ss.wipeKeys() // superseded by the draft's own keys
    draft.ss.ownsKeys = false // from now on these are the committed keys
    draft.stage = 'done'
    this.#state = draft
    this.#index++
    if (this.isComplete()) this.#wipeHandshakeSecrets()
  }

  /** After Split() the HandshakeState's secrets are no longer needed (§5.3): wipe them. */
  #wipeHandshakeSecrets(): void {
    const { ss, e } = this.#state
    ss.wipeKeys()
    ss.k = undefined
    if (e) this.#wipeSecret(e.secretKey)
  }

  /** Make the provider forget a secret key (cached key objects), then zero it. */
  #wipeSecret(secretKey: Uint8Array): void {
    this.#crypto.releaseKey(secretKey)
    secretKey.fill(0)
  }
}

/**
 * Create a HandshakeState (§5.3 Initialize()) for `pattern` with this party's role and keys.
 * Throws ERR_INVALID_ARGUMENT when a key the pattern needs is missing or malformed.
 */
export function createHandshake(options: HandshakeOptions): Handshake {
  return new HandshakeState(options)
}
