/**
 * Secure channels over routes of the router: the I/O workers around the pure Noise engine
 * (noise.ts), the handshake payloads (messages.ts) and the transport session (session.ts).
 *
 * ```
 *  initiator                                   responder (listener "secure")
 *  ─ HANDSHAKE_1  -> e ──────────────────────────▶ (half-open slot, timer)
 *  ◀──────────── HANDSHAKE_2 <- e, ee, s, es + identity binding
 *  check binding & trust (or ABORT)
 *  ─ HANDSHAKE_3  -> s, se + identity binding ───▶ check binding & trust (or CLOSE POLICY_DENY)
 *  ◀──────────────────────────── READY (encrypted)  channel established on both ends
 *  ◀──────────── TRANSPORT (u64 nonce | ciphertext) ─────────▶
 * ```
 *
 * Each end has two local addresses: the **encryptor** (what local workers route to; it takes
 * only local input) and the **decryptor** (what the peer sends ciphertext to; it accepts network
 * input because it authenticates everything itself). The inner plaintext carries the rest of the
 * onward route, the return route and the payload, so relays see neither which service is
 * addressed nor the data. Decrypted messages carry the peer's identifier as node-local metadata
 * and may reach only what the listener (or the initiator's `allow`) allows.
 *
 * @module
 */
import { EventEmitter } from 'node:events'
import { tlError, ThroughlineError, isThroughlineError } from '../errors.ts'
import { AllowList } from '../router/access.ts'
import { type Address, local, randomLocal } from '../router/address.ts'
import { decodeEnvelope, encodeHead } from '../router/codec.ts'
import type { Message } from '../router/message.ts'
import type { Node, WorkerContext } from '../router/node.ts'
import { type Route, routeToString } from '../router/route.ts'
import { DEFAULT_REKEY_INTERVAL, REPLAY_WINDOW } from './constants.ts'
import type { CryptoSpec, KeyPair } from './crypto/types.ts'
import { createBinding, DEFAULT_BINDING_TTL_MS, type IdentitySigner, type KeyBinding, verifyBinding } from './identity.ts'
import {
  CLOSE_CAUSE,
  type CloseCause,
  decodeAbort,
  decodeClose,
  decodeIdentityPayload,
  decodePayload1,
  encodeAbort,
  encodeClose,
  encodeIdentityPayload,
  encodePayload1,
  frame,
  KIND,
  MSG,
  PROLOGUE,
} from './messages.ts'
import { type AttestationHost, type AttestationOptions, ChannelAttestation, causeOf, checkAttestationOptions, codeOfCause, decodeRound, parseAttestPayload } from './attestation.ts'
import { resultAttributes } from '../attest/verifier.ts'
import type { AttestationResult } from '../attest/types.ts'
import { createHandshake, generateKeyPair, type Handshake } from './noise.ts'
import { Session } from './session.ts'
import { type PeerIdentity, type TrustPolicy, trustAny } from './trust.ts'

// ---- defaults (documented in docs/limits.md) ----
/** A handshake not complete within this time (ms) is given up. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
/** The same, when the channel attests (evidence, appraisal or a verifier service in the loop). */
export const DEFAULT_ATTESTED_HANDSHAKE_TIMEOUT_MS = 30_000
/** Half-open handshakes one listener holds at once. */
export const DEFAULT_MAX_HALF_OPEN = 128
/** A keepalive is sent when nothing was sent for this long (ms). */
export const DEFAULT_KEEPALIVE_MS = 20_000
/** A channel on which nothing arrived for this long (ms) is closed (IDLE_TIMEOUT). */
export const DEFAULT_CHANNEL_IDLE_MS = 60_000

/** Options shared by listeners and initiators. */
export interface ChannelPolicyOptions {
  /** Who is accepted at the other end. Default: any authenticated identity. */
  trust?: TrustPolicy
  /** Local addresses that decrypted messages may reach (deny by default). */
  allow?: Iterable<string>
  rekeyInterval?: number
  replayWindow?: number
  handshakeTimeout?: number
  keepaliveInterval?: number
  idleTimeout?: number
  /** Attestation of the peer (require, verifier, mode, ...) and of this end (attesters, passport). */
  attestation?: AttestationOptions
}

export interface SecureChannelsOptions {
  /** The identity that signs this node's static key binding. */
  identity: IdentitySigner & { readonly identifier: string }
  crypto?: CryptoSpec
  /** Lifetime of the static key binding (ms); it is re-signed at half-life. */
  bindingTtl?: number
  /** The X25519 static key (e.g. from a vault: `vault.x25519KeyPair(handle)`). Default: a fresh one. */
  staticKeyPair?: KeyPair
  /** Node-wide attestation defaults (typically the attesters and passport); channel options override. */
  attestation?: AttestationOptions
}

export interface ListenerOptions extends ChannelPolicyOptions {
  maxHalfOpen?: number
}

export interface ChannelConnectOptions extends ChannelPolicyOptions {
  signal?: AbortSignal
}

const SEND_EMPTY = new Uint8Array(0)

/**
 * The secure channel service of one node: its static key, the identity binding of that key,
 * listeners and initiators.
 */
export class SecureChannels {
  readonly node: Node
  readonly identity: IdentitySigner & { readonly identifier: string }
  readonly crypto: CryptoSpec
  readonly staticKeyPair: KeyPair
  readonly bindingTtl: number
  readonly attestation: AttestationOptions
  #binding: KeyBinding | undefined
  #bindingPending: Promise<KeyBinding> | undefined

  constructor(node: Node, options: SecureChannelsOptions) {
    this.node = node
    this.identity = options.identity
    this.crypto = options.crypto ?? 'node'
    this.bindingTtl = options.bindingTtl ?? DEFAULT_BINDING_TTL_MS
    this.staticKeyPair = options.staticKeyPair ?? generateKeyPair(this.crypto)
    this.attestation = options.attestation ?? {}
  }

  /** The key binding of this node's static key, signed (again) when half its lifetime is gone. */
  async binding(): Promise<KeyBinding> {
    const now = this.node.now()
    const b = this.#binding
    if (b !== undefined && b.expires - now > this.bindingTtl / 2) return b
    this.#bindingPending ??= createBinding(this.identity, this.staticKeyPair.publicKey, this.bindingTtl, now).finally(() => {
      this.#bindingPending = undefined
    })
    this.#binding = await this.#bindingPending
    return this.#binding
  }

  /** Starts a listener at local address `name` (default `secure`). */
  async listen(name = 'secure', options: ListenerOptions = {}): Promise<SecureListener> {
    checkAttestationOptions({ ...this.attestation, ...options.attestation })
    await this.binding()
    return new SecureListener(this, name, options)
  }

  /**
   * Opens a channel to the listener at the end of `route` (e.g. `[1#relay:4000,
   * 0#forward_to_d, 0#secure]`). Resolves once the responder has accepted this identity.
   * Rejects with ERR_HANDSHAKE_FAILED, ERR_IDENTITY_INVALID, ERR_TRUST_POLICY,
   * ERR_CHANNEL_CLOSED, ERR_HANDSHAKE_TIMEOUT or ERR_ABORTED.
   */
  async connect(route: Route, options: ChannelConnectOptions = {}): Promise<SecureChannel> {
    const binding = await this.binding()
    const ch = new SecureChannel(this, 'initiator', options, binding)
    return ch.initiate(route, options.signal)
  }
}

type State = 'handshake' | 'open' | 'closed'

/** One end of a secure channel. Emits `open` and `close` (ThroughlineError with `details.cause`). */
export class SecureChannel extends EventEmitter {
  readonly channels: SecureChannels
  readonly node: Node
  readonly role: 'initiator' | 'responder'
  /** Local workers route through the channel via this address. */
  readonly address: Address
  /** The peer sends ciphertext here. */
  readonly decryptorAddress: Address
  readonly options: ChannelPolicyOptions
  readonly flow: AllowList
  #state: State = 'handshake'
  #hs: Handshake
  #binding: KeyBinding
  #session: Session | undefined
  #peerRoute: Route = []
  #peer: PeerIdentity | undefined
  #handshakeHash: Uint8Array | undefined
  #timer: NodeJS.Timeout | undefined
  #lastSent = 0
  #lastReceived = 0
  #settle: ((err?: ThroughlineError) => void) | undefined
  readonly #attest: ChannelAttestation
  /** This end accepted the peer (identity, trust, attestation). */
  #accepted = false
  /** The peer accepted this end (message 3, or READY). */
  #peerAccepted = false
  #remoteStatic: Uint8Array | undefined
  #encCtx: WorkerContext | undefined
  #decCtx: WorkerContext | undefined
  /** Counters, for diagnostics. */
  readonly stats = { sent: 0, received: 0, rejected: 0 }

  constructor(channels: SecureChannels, role: 'initiator' | 'responder', options: ChannelPolicyOptions, binding: KeyBinding, listenerFlow?: AllowList) {
    super()
    this.channels = channels
    this.node = channels.node
    this.role = role
    this.options = options
    this.#binding = binding
    this.address = randomLocal()
    this.decryptorAddress = randomLocal()
    this.flow = listenerFlow ?? new AllowList(`secure channel ${this.address.text}`, options.allow ?? [])
    this.#hs = createHandshake({ pattern: 'XX', initiator: role === 'initiator', staticKeyPair: channels.staticKeyPair, prologue: PROLOGUE, crypto: channels.crypto })
    this.#attest = new ChannelAttestation(this.#attestHost(), { ...channels.attestation, ...options.attestation })
    this.#encCtx = this.node.startWorker(this.address, { handleMessage: (_c, m) => this.#encrypt(m) }, { layer: 'channel' })
    this.#decCtx = this.node.startWorker(this.decryptorAddress, { handleMessage: (_c, m) => this.#receive(m), onStop: () => this.#onNodeStop() }, { layer: 'channel', acceptsNetwork: true })
  }

  get state(): State {
    return this.#state
  }

  /** The peer's attestation result (once appraised; updated by every re-attestation round). */
  get attestation(): AttestationResult | undefined {
    return this.#attest.result
  }

  /** Attestation rounds inside this channel that passed (gate and re-attestation rounds). */
  get attestationRounds(): number {
    return this.#attest.rounds
  }

  /** Re-attests the peer now (a round inside the channel); resolves with the new result. */
  reattest(): Promise<AttestationResult> {
    return this.#attest.reattest()
  }

  #attestHost(): AttestationHost {
    return {
      role: this.role,
      now: () => this.node.now(),
      staticPublicKey: () => this.channels.staticKeyPair.publicKey,
      remoteStaticKey: () => this.#remoteStatic!,
      handshakeHash: () => this.#handshakeHash!,
      identifier: () => this.#peer?.identifier,
      sendRound: (kind, body) => {
        if (this.#state !== 'closed' && this.#session !== undefined) this.#sendKind(kind === 'request' ? KIND.ATTEST_REQUEST : kind === 'evidence' ? KIND.ATTEST_EVIDENCE : KIND.ATTEST_RESULT, body)
      },
      fail: (err) => this.#fail(err, causeOf(err.code)),
      gatePassed: () => {
        if (this.#state !== 'handshake') return
        this.#accept()
      },
      updated: (result) => {
        if (this.#peer !== undefined) this.#peer = { ...this.#peer, attributes: { ...this.#peer.attributes, ...resultAttributes(result) } }
      },
    }
  }

  /** The authenticated peer (once the handshake got that far). */
  get peer(): PeerIdentity | undefined {
    return this.#peer
  }

  /** The Noise handshake hash (channel binding), once complete. */
  get handshakeHash(): Uint8Array | undefined {
    return this.#handshakeHash
  }

  // ------------------------------------------------------------------ handshake: initiator

  /** @internal */
  initiate(route: Route, signal?: AbortSignal): Promise<SecureChannel> {
    return new Promise<SecureChannel>((resolve, reject) => {
      const onAbort = (): void => this.#fail(tlError('ERR_ABORTED', 'secure channel handshake aborted'), CLOSE_CAUSE.NORMAL)
      this.#settle = (err) => {
        signal?.removeEventListener('abort', onAbort)
        if (err === undefined) resolve(this)
        else reject(err)
      }
      if (signal?.aborted) {
        onAbort()
        return
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#startHandshakeTimer()
      const msg1 = this.#hs.writeMessage(encodePayload1(this.#attest.payload1())) // -> e
      this.#sendRaw(route, frame(MSG.HANDSHAKE_1, msg1))
    })
  }

  async #onHandshake2(msg: Message, body: Uint8Array): Promise<void> {
    // <- e, ee, s, es
    const payload = decodeIdentityPayload(this.#hs.readMessage(body), 2)
    const h2 = this.#hs.payloadHash()!
    this.#peerRoute = msg.return
    const a2 = parseAttestPayload(payload.attest, 'handshake payload 2')
    await this.#checkPeer(payload.binding, async () => {
      await this.#attest.verifyPayload(a2, h2)
    })
    if (this.#state !== 'handshake') return
    // -> s, se (the attestation payload binds to h3*, h just before this payload)
    this.#attest.onPeerRequirements(a2)
    const attest = await this.#attest.proverPayload(() => this.#hs.prepareWrite())
    if (this.#state !== 'handshake') return
    const msg3 = this.#hs.writeMessage(encodeIdentityPayload(this.#binding, attest ?? null))
    this.#split()
    this.#sendRaw(this.#peerRoute, frame(MSG.HANDSHAKE_3, msg3))
    this.#attest.start()
    if (!this.#attest.gated) this.#accepted = true
  }

  // ------------------------------------------------------------------ handshake: responder

  /** @internal Handles HANDSHAKE_1 for a listener. */
  async respond(msg: Message, body: Uint8Array): Promise<void> {
    this.#startHandshakeTimer()
    try {
      // -> e
      const p1 = decodePayload1(this.#hs.readMessage(body))
      this.#peerRoute = msg.return
      this.#attest.onPayload1(p1.attest)
      // <- e, ee, s, es (the attestation payload binds to h2*, h just before this payload)
      const attest = await this.#attest.proverPayload(() => this.#hs.prepareWrite())
      if (this.#state !== 'handshake') return
      const msg2 = this.#hs.writeMessage(encodeIdentityPayload(this.#binding, attest ?? null))
      this.#sendRaw(this.#peerRoute, frame(MSG.HANDSHAKE_2, msg2))
    } catch (err) {
      const e = asError(err)
      if (e.code.startsWith('ERR_ATTEST') || e.code === 'ERR_TIMEOUT') this.#fail(e, causeOf(e.code))
      else this.#fail(e, CLOSE_CAUSE.HANDSHAKE_FAILED, false)
    }
  }

  async #onHandshake3(body: Uint8Array): Promise<void> {
    // -> s, se
    const payload = decodeIdentityPayload(this.#hs.readMessage(body), 3)
    const h3 = this.#hs.payloadHash()!
    this.#split()
    const a3 = parseAttestPayload(payload.attest, 'handshake payload 3')
    await this.#checkPeer(payload.binding, async () => {
      await this.#attest.verifyPayload(a3, h3)
    })
    if (this.#state !== 'handshake') return
    // Message 3 says the initiator accepted us, unless it attests us in a round first (gate).
    if (!a3.gate) this.#peerAccepted = true
    this.#attest.start()
    if (!this.#attest.gated) this.#accept()
  }

  /** This end accepted the peer: tell it (READY), and open once the peer accepted this end too. */
  #accept(): void {
    if (this.#accepted) return
    this.#accepted = true
    this.#sendKind(KIND.READY, SEND_EMPTY)
    this.#maybeOpen()
  }

  #maybeOpen(): void {
    if (this.#state === 'handshake' && this.#accepted && this.#peerAccepted && this.#peer !== undefined) this.#opened()
  }

  // ------------------------------------------------------------------ handshake: both

  /**
   * Identity (key binding), then attestation (so trust policies can read `attest.*` attributes),
   * then the trust policy. Any refusal fails the handshake with its cause.
   */
  async #checkPeer(binding: KeyBinding, attest: () => Promise<void>): Promise<void> {
    const remoteStatic = this.#hs.remoteStaticKey()!
    this.#remoteStatic = remoteStatic
    let identifier: string
    try {
      identifier = verifyBinding(binding, remoteStatic, this.node.now())
    } catch (err) {
      this.#fail(asError(err), CLOSE_CAUSE.IDENTITY_INVALID)
      return
    }
    this.#peer = { identifier, alg: binding.alg, attributes: {} }
    try {
      await attest()
    } catch (err) {
      const e = asError(err)
      this.#fail(e, causeOf(e.code))
      return
    }
    if (this.#state !== 'handshake') return
    const peer: PeerIdentity = this.#peer
    this.#peer = undefined
    const trust = this.options.trust ?? trustAny()
    let ok = false
    try {
      ok = await trust(peer)
    } catch (err) {
      this.node.logger.warn('trust policy failed', { error: err })
    }
    if (this.#state !== 'handshake') return
    if (!ok) {
      this.#fail(tlError('ERR_TRUST_POLICY', `peer ${identifier} is not trusted (${trust.description ?? 'custom policy'})`, { details: { peer: identifier } }), CLOSE_CAUSE.POLICY_DENY)
      return
    }
    this.#peer = peer
  }

  #split(): void {
    const { send, receive } = this.#hs.split()
    this.#handshakeHash = this.#hs.handshakeHash()
    this.#hs.destroy()
    this.#session = new Session(send, receive, {
      rekeyInterval: this.options.rekeyInterval ?? DEFAULT_REKEY_INTERVAL,
      replayWindow: this.options.replayWindow ?? REPLAY_WINDOW,
    })
  }

  #startHandshakeTimer(): void {
    const attested = this.#attest.requires.length > 0 || this.#attest.provides.length > 0
    const ms = this.options.handshakeTimeout ?? (attested ? DEFAULT_ATTESTED_HANDSHAKE_TIMEOUT_MS : DEFAULT_HANDSHAKE_TIMEOUT_MS)
    this.#timer = setTimeout(() => {
      this.#fail(tlError('ERR_HANDSHAKE_TIMEOUT', `secure channel handshake (${this.role}) did not complete within ${ms} ms`), CLOSE_CAUSE.TIMEOUT)
    }, ms)
  }

  #opened(): void {
    clearTimeout(this.#timer)
    this.#state = 'open'
    this.#lastSent = this.#lastReceived = this.node.now()
    const keepalive = this.options.keepaliveInterval ?? DEFAULT_KEEPALIVE_MS
    const idle = this.options.idleTimeout ?? DEFAULT_CHANNEL_IDLE_MS
    const tick = Math.max(10, Math.floor(Math.min(keepalive || Infinity, idle || Infinity) / 2))
    if (Number.isFinite(tick)) {
      this.#timer = setInterval(() => this.#onTick(keepalive, idle), tick)
      this.#timer.unref()
    }
    this.node.logger.debug('secure channel open', { role: this.role, peer: this.#peer?.identifier, address: this.address.text })
    this.emit('open')
    const s = this.#settle
    this.#settle = undefined
    s?.()
  }

  #onTick(keepalive: number, idle: number): void {
    const now = this.node.now()
    if (idle > 0 && now - this.#lastReceived >= idle) {
      this.close(CLOSE_CAUSE.IDLE_TIMEOUT, `nothing received for ${idle} ms`)
      return
    }
    if (keepalive > 0 && now - this.#lastSent >= keepalive) this.#sendKind(KIND.KEEPALIVE, SEND_EMPTY)
  }

  // ------------------------------------------------------------------ receiving

  /** Transport messages are handled synchronously; only handshake steps (trust policies) await. */
  #receive(msg: Message): void | Promise<void> {
    const p = msg.payload
    if (p.length === 0) {
      this.#reject(tlError('ERR_CHANNEL_MESSAGE', 'empty secure channel message'), msg)
      return
    }
    if (p[0] === MSG.TRANSPORT) {
      try {
        this.#onTransport(msg)
      } catch (err) {
        this.#reject(asError(err), msg)
      }
      return
    }
    return this.#receiveHandshake(msg, p[0]!, p.subarray(1))
  }

  async #receiveHandshake(msg: Message, type: number, body: Uint8Array): Promise<void> {
    try {
      if (this.#state === 'handshake' && type === MSG.ABORT) {
        const { cause, detail } = decodeAbort(body)
        const code = codeOfCause(cause)
        this.#fail(
          tlError(code === 'ERR_TRUST_POLICY' ? 'ERR_CHANNEL_CLOSED' : code, `the peer gave up the handshake (${cause}${detail ? `: ${detail}` : ''})`, { details: { cause, detail, by: 'peer' } }),
          cause,
          false,
        )
      } else if (this.#state === 'handshake' && this.role === 'initiator' && type === MSG.HANDSHAKE_2 && this.#session === undefined) {
        await this.#onHandshake2(msg, body)
      } else if (this.#state === 'handshake' && this.role === 'responder' && type === MSG.HANDSHAKE_3 && this.#session === undefined) {
        await this.#onHandshake3(body)
      } else {
        this.#reject(tlError('ERR_CHANNEL_MESSAGE', `unexpected secure channel message type ${type} in state ${this.#state}`), msg)
      }
    } catch (err) {
      const e = asError(err)
      if (this.#state === 'handshake') this.#fail(e, causeOf(e.code))
      else this.#reject(e, msg)
    }
  }

  /** A message that is dropped but does not end the channel (forged, replayed, malformed). */
  #reject(err: ThroughlineError, msg?: Message): void {
    this.stats.rejected++
    this.node.drop('channel-rejected', err, msg, this.decryptorAddress.text)
  }

  #onTransport(msg: Message): void {
    const session = this.#session
    if (session === undefined) {
      this.#reject(tlError('ERR_CHANNEL_MESSAGE', 'transport message before the handshake completed'), msg)
      return
    }
    let plain: Uint8Array
    try {
      plain = session.open(msg.payload)
    } catch (err) {
      this.#reject(asError(err), msg)
      return
    }
    this.#lastReceived = this.node.now()
    this.stats.received++
    const kind = plain[0]
    const body = plain.subarray(1)
    if (kind === KIND.DATA) {
      if (this.#state !== 'open') {
        this.#reject(tlError('ERR_CHANNEL_MESSAGE', 'data before the channel was accepted'), msg)
        return
      }
      const inner = decodeEnvelope(body, { maxHeaderSize: this.node.limits.maxHeaderSize, maxRouteLength: this.node.limits.maxRouteLength })
      const ret = [this.address]
      for (const a of inner.return) ret.push(a)
      this.node.route({
        onward: inner.onward,
        return: ret,
        payload: inner.payload,
        local: {
          flow: this.flow,
          producer: msg.local.producer,
          connection: msg.local.connection,
          channel: this.address,
          peer: { identifier: this.#peer!.identifier, attributes: this.#peer!.attributes },
        },
      })
    } else if (kind === KIND.READY && this.#state === 'handshake' && !this.#peerAccepted) {
      this.#peerAccepted = true
      this.#maybeOpen()
    } else if (kind === KIND.ATTEST_REQUEST || kind === KIND.ATTEST_EVIDENCE || kind === KIND.ATTEST_RESULT) {
      this.#onRound(kind, body, msg)
    } else if (kind === KIND.CLOSE) {
      const { cause, detail } = decodeClose(body)
      const err =
        cause === CLOSE_CAUSE.POLICY_DENY
          ? tlError('ERR_TRUST_POLICY', `the peer does not trust this identity${detail ? `: ${detail}` : ''}`, { details: { cause, detail, by: 'peer' } })
          : tlError(codeOfCause(cause), `closed by the peer (${cause}${detail ? `: ${detail}` : ''})`, { details: { cause, detail, by: 'peer' } })
      this.#teardown(err)
    } else if (kind === KIND.KEEPALIVE) {
      // only refreshes lastReceived
    } else {
      this.#reject(tlError('ERR_CHANNEL_MESSAGE', `unknown inner message kind ${String(kind)}`), msg)
    }
  }

  /** Attestation rounds inside the channel (after the handshake keys exist). */
  #onRound(kind: number, body: Uint8Array, msg: Message): void {
    let decoded: unknown
    try {
      decoded = decodeRound(body)
    } catch (err) {
      this.#reject(asError(err), msg)
      return
    }
    // ATTEST_RESULT only tells the prover how its evidence fared: nothing to do with it here
    if (kind === KIND.ATTEST_RESULT) return
    const run = kind === KIND.ATTEST_REQUEST ? this.#attest.onRequest(decoded) : this.#attest.onEvidence(decoded)
    run.catch((err: unknown) => this.#reject(asError(err), msg))
  }

  // ------------------------------------------------------------------ sending

  #encrypt(msg: Message): void {
    if (this.#state !== 'open') {
      this.node.drop('channel-not-open', tlError('ERR_CHANNEL_CLOSED', `secure channel ${this.address.text} is ${this.#state}`), msg, this.address.text)
      return
    }
    // inner plaintext = kind | head of the inner envelope | payload, sealed without concatenating
    // it here (Session.sealParts assembles it in a reused scratch buffer)
    const head = encodeHead(msg.onward.slice(1), msg.return, 1)
    head[0] = KIND.DATA
    this.#sendSealed(this.#session!.sealParts(head, msg.payload), msg)
  }

  #sendKind(kind: number, body: Uint8Array): void {
    const plain = Buffer.allocUnsafe(1 + body.length)
    plain[0] = kind
    plain.set(body, 1)
    this.#sendSealed(this.#session!.seal(plain))
  }

  #sendSealed(wire: Uint8Array, cause?: Message): void {
    this.#lastSent = this.node.now()
    this.stats.sent++
    this.node.route({ onward: this.#peerRoute, return: [this.decryptorAddress], payload: wire, local: { producer: cause?.local.producer } })
  }

  #sendRaw(route: Route, payload: Uint8Array): void {
    this.node.route({ onward: route, return: [this.decryptorAddress], payload, local: {} })
  }

  // ------------------------------------------------------------------ closing

  /** Closes the channel, telling the peer why (encrypted). */
  close(cause: CloseCause = CLOSE_CAUSE.NORMAL, detail = ''): void {
    if (this.#state === 'closed') return
    if (this.#session !== undefined) this.#sendKind(KIND.CLOSE, encodeClose(cause, detail))
    else if (this.#peerRoute.length > 0) this.#sendRaw(this.#peerRoute, encodeAbort(cause))
    this.#teardown(tlError('ERR_CHANNEL_CLOSED', `closed locally (${cause}${detail ? `: ${detail}` : ''})`, { details: { cause, by: 'local' } }))
  }

  /**
   * A failure: tell the peer (encrypted CLOSE with a readable detail once keys exist, else a clear
   * ABORT with only the cause and a short reason code), then tear down.
   */
  #fail(err: ThroughlineError, cause: CloseCause, tellPeer = true): void {
    if (this.#state === 'closed') return
    if (err.details?.['cause'] === undefined) err = withCause(err, cause)
    if (tellPeer) {
      const reason = typeof err.details?.['reason'] === 'string' ? err.details['reason'] : ''
      const attestation = err.code.startsWith('ERR_ATTEST') || err.code.startsWith('ERR_VERIFIER') || err.code === 'ERR_TIMEOUT'
      if (this.#session !== undefined) this.#sendKind(KIND.CLOSE, encodeClose(cause, attestation ? err.message.replace(/^ERR_[A-Z_]+: /, '') : ''))
      else if (this.#peerRoute.length > 0) this.#sendRaw(this.#peerRoute, encodeAbort(cause, reason))
    }
    this.#teardown(err)
  }

  #onNodeStop(): void {
    if (this.#state === 'open') this.close(CLOSE_CAUSE.SHUTDOWN, 'node stopping')
    else this.#teardown(tlError('ERR_STOPPED', 'node stopped'))
  }

  #teardown(err: ThroughlineError): void {
    if (this.#state === 'closed') return
    const wasOpen = this.#state === 'open'
    this.#state = 'closed'
    clearTimeout(this.#timer)
    clearInterval(this.#timer)
    this.#session?.destroy()
    this.#hs.destroy()
    this.#attest.close(err)
    void this.#encCtx?.stop()
    void this.#decCtx?.stop()
    const level = err.code === 'ERR_CHANNEL_CLOSED' || err.code === 'ERR_STOPPED' ? 'debug' : 'warn'
    this.node.logger[level]('secure channel closed', { role: this.role, peer: this.#peer?.identifier, code: err.code, error: err.message, route: routeToString(this.#peerRoute) })
    const s = this.#settle
    this.#settle = undefined
    if (s !== undefined) s(err)
    if (wasOpen || this.listenerCount('close') > 0) this.emit('close', err)
  }
}

/** The same error with `details.cause` (the close cause) and `details.by = 'local'` added. */
function withCause(err: ThroughlineError, cause: CloseCause): ThroughlineError {
  const e = new ThroughlineError(err.code, err.message.slice(err.code.length + 2), { cause: err.cause, details: { ...err.details, cause, by: 'local' } })
  e.stack = err.stack
  return e
}

function asError(err: unknown): ThroughlineError {
  return isThroughlineError(err) ? err : tlError('ERR_HANDSHAKE_FAILED', String(err), { cause: err })
}

/**
 * A listener: takes HANDSHAKE_1 messages at its address, keeps at most `maxHalfOpen` handshakes
 * in progress, and emits `channel` (SecureChannel) for each accepted peer and `error`
 * (ThroughlineError) for each refused or failed handshake.
 */
export class SecureListener extends EventEmitter {
  readonly channels: SecureChannels
  readonly address: Address
  readonly options: ListenerOptions
  readonly flow: AllowList
  readonly #halfOpen = new Set<SecureChannel>()
  readonly #open = new Set<SecureChannel>()

  constructor(channels: SecureChannels, name: string, options: ListenerOptions) {
    super()
    this.channels = channels
    this.address = local(name)
    this.options = options
    this.flow = new AllowList(`secure listener ${name}`, options.allow ?? [])
    channels.node.startWorker(this.address, { handleMessage: (_c, m) => this.#handle(m), onStop: () => this.#stop() }, { layer: 'channel' })
  }

  /** Handshakes in progress. */
  get halfOpen(): number {
    return this.#halfOpen.size
  }

  /** Established channels. */
  get channelsOpen(): number {
    return this.#open.size
  }

  async #handle(msg: Message): Promise<void> {
    const node = this.channels.node
    if (msg.payload[0] !== MSG.HANDSHAKE_1) {
      node.drop('channel-rejected', tlError('ERR_CHANNEL_MESSAGE', `secure listener ${this.address.value} takes only handshake message 1`), msg, this.address.text)
      return
    }
    if (msg.return.length === 0) {
      node.drop('channel-rejected', tlError('ERR_CHANNEL_MESSAGE', 'handshake message 1 without a return route'), msg, this.address.text)
      return
    }
    const max = this.options.maxHalfOpen ?? DEFAULT_MAX_HALF_OPEN
    if (this.#halfOpen.size >= max) {
      node.drop('handshake-limit', tlError('ERR_HANDSHAKE_LIMIT', `secure listener ${this.address.value} has ${max} half-open handshakes`), msg, this.address.text)
      return
    }
    const binding = await this.channels.binding()
    const ch = new SecureChannel(this.channels, 'responder', this.options, binding, this.flow)
    this.#halfOpen.add(ch)
    ch.once('open', () => {
      this.#halfOpen.delete(ch)
      this.#open.add(ch)
      this.emit('channel', ch)
    })
    ch.on('close', (err: ThroughlineError) => {
      const wasHalfOpen = this.#halfOpen.delete(ch)
      this.#open.delete(ch)
      if (wasHalfOpen && this.listenerCount('error') > 0) this.emit('error', err)
    })
    await ch.respond(msg, msg.payload.subarray(1))
  }

  #stop(): void {
    for (const ch of [...this.#halfOpen]) ch.close(CLOSE_CAUSE.SHUTDOWN)
  }
}
