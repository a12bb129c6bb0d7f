/**
 * The `throughline` command.
 *
 * ```
 * throughline node start [--tcp HOST:PORT]... [--relay-at ROUTE --relay-name NAME] [--name NAME]
 *                        [--identity NAME --secure-listener [--trust ID]...]
 *                        [--attest sim|tpm2 [--sim-root FILE] [--tpm EP] [--passport-from ROUTE] [--enrol-at ROUTE]]
 *                        [RELYING-PARTY FLAGS] [--allow NAME]... [--log-level debug|info|warn|error|silent]
 * throughline send --to ROUTE [--timeout MS] [--attest sim|tpm2] [RELYING-PARTY FLAGS] [--show-attestation] MESSAGE
 * throughline attest pcrs --attest sim|tpm2 [--tpm EP] [--name NAME]
 * throughline attest ek --attest tpm2 --tpm EP [--out FILE]
 * throughline verifier start [--tcp HOST:PORT]... --identity NAME [--admin ID]... [LOCAL VERIFIER FLAGS]
 *                            [--enrol-tpm [--tofu-ek]] [--result-ttl MS] [--key FILE]
 * throughline verifier ek allow|list --to ROUTE --identity NAME [FILE]
 * throughline verifier reference-values set|remove|list --to ROUTE --identity NAME ...
 * throughline verifier policy show|set --to ROUTE --identity NAME [policy flags]
 * throughline identity create|show NAME
 * throughline help | version
 *
 * RELYING-PARTY FLAGS: --require-attestation SUITE... [--attest-mode handshake|post-handshake]
 *   [--reattest-interval MS] and one appraiser: --verifier ROUTE [--verifier-id ID] (background
 *   check and passport issuers), or a local verifier (LOCAL VERIFIER FLAGS: --trust-sim-root FILE...
 *   --trust-tpm-ak FILE... --reference-values FILE --trust-sim --min-svn N).
 * ```
 *
 * Attestation files (sim root and platform, tpm2 AK and measurement log, verifier key) live in the
 * home; see attest.ts. Lines for scripts: `attest sim root FILE`, `attest tpm2 ak FILE` (node start),
 * `verifier key KID` (verifier start), one JSON line per set (`attest pcrs`, `reference-values
 * list`); `send --show-attestation` prints `attestation ID: status=… suite=… verifier=… expires=…
 * trust-vector=…` per channel on stderr.
 *
 * `main(argv, io)` returns the exit code; the `bin` file calls it with the process's streams.
 * Lines meant for scripts go to stdout (`listening tcp HOST:PORT`, `relay registered NAME`, a
 * reply); logs and errors go to stderr as one line each.
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs'
import { writeFileAtomic } from '../atomic-file.ts'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { type ErrorCode, isThroughlineError, ThroughlineError, tlError } from '../errors.ts'
import { type Logger, lineLogger, silentLogger } from '../router/logger.ts'
import { Node } from '../router/node.ts'
import { parseRoute, parseRouteSegments } from '../router/route.ts'
import { startEcho } from '../services/echo.ts'
import { FORWARDER_PREFIX, RELAY_ADDRESS, RelayClient, RelayService } from '../services/relay.ts'
import { TcpTransport, type TcpTransportOptions } from '../transports/tcp.ts'
import { WebSocketTransport } from '../transports/websocket.ts'
import { SerialTransport } from '../transports/serial.ts'
import { IdentityStore, type IdentitySigner, SoftwareIdentity, defaultHome } from '../channel/identity.ts'
import { resolveRoute } from '../channel/resolve.ts'
import { SecureChannels } from '../channel/secure-channel.ts'
import { type TrustPolicy, trustAny, trustIdentifiers } from '../channel/trust.ts'
import type { AttestationOptions } from '../channel/attestation.ts'
import '../channel/index.ts'
import { VerifierKey } from '../attest/token.ts'
import { PassportClient, VerifierService, checkPolicy, enrolWithVerifier, verifierRequest } from '../services/verifier.ts'
import {
  LOCAL_VERIFIER_OPTIONS,
  RELYING_PARTY_OPTIONS,
  VerifierLink,
  attestationLine,
  checkLocalVerifierFlags,
  checkProverFlags,
  checkRelyingPartyFlags,
  intFlag,
  loadVerifierKey,
  localVerifier,
  openProver,
  platformReferenceSet,
  readEkFile,
  readReferenceValues,
  readJsonIfExists,
  readStoredAks,
  readStoredEks,
  relyingPartyOptions,
  tpmEkPublic,
  type StoredAk,
  type ProverFlags,
  type TpmVaultInUse,
} from './attest.ts'

/** Where the command writes, and how it is told to stop (tests pass their own). */
export interface CliIO {
  stdout: (line: string) => void
  stderr: (line: string) => void
  /** Aborted when the command should shut down (SIGINT/SIGTERM for the real process). */
  signal?: AbortSignal
  /** Called once a long-running command is ready (tests). */
  onReady?: (info: { node: Node; listeners: string[] }) => void
}

const USAGE = `usage:
  throughline node start [--tcp HOST:PORT]... [--ws HOST:PORT]... [--serial PATH[@BAUD]]...
                         [--relay-at ROUTE --relay-name NAME] [--name NAME]
                         [--identity NAME --secure-listener [--trust ID]...]
                         [--attest sim|tpm2 [--sim-root FILE] [--tpm EP] [--passport-from ROUTE]
                          [--early-evidence always|never]]
                         [--enrol-at ROUTE] [relying-party flags]
                         [--allow NAME]... [--home DIR] [--log-level debug|info|warn|error|silent]
                         [--tcp-coalesce-max BYTES]
      Runs a node in the foreground with the echo and relay services, and with
      --secure-listener a secure channel listener at "secure" (peers: any identity, or the
      --trust identifiers). Prints "listening tcp|ws HOST:PORT" and "listening serial PATH"
      per listener, "secure listener ID" and "relay registered NAME" after each successful
      relay registration. Stops on SIGINT/SIGTERM.
      --tcp-coalesce-max BYTES: TCP connections copy payloads up to BYTES (default 256) into
      one write per event-loop turn; larger ones are written zero-copy. 0: no payload is copied.
      --attest sim: attests with a simulated platform (root key DIR/attest/sim-root.key or
      --sim-root FILE, platform DIR/attest/sim-platform.json); prints "attest sim root PUBFILE",
      the SPKI PEM a verifier trusts. --attest tpm2 --tpm EP: attests with TPM quotes (AK and
      measurement log in DIR/attest); prints "attest tpm2 ak PUBFILE", the AK a verifier pins.
      --passport-from ROUTE: gets a passport from a verifier service, attesting to it at ROUTE
      (e.g. /tcp/V:4100/secure/secure-attested/service/verifier).
      --early-evidence never: shows no evidence to a peer that is not yet authenticated (handshake
      message 2); the peer gets it in a round right after the handshake instead.
      --enrol-at ROUTE (with --attest tpm2): enrols the AK at the verifier service at ROUTE
      (e.g. /tcp/V:4100/secure/secure/service/verifier) by TPM credential activation, so no one
      pins it by hand; prints "attest tpm2 enrolled KID".
      The relying-party flags make the listener require attestation of its peers.
  throughline send --to ROUTE [--timeout MS] [--identity NAME] [--trust ID]... [--home DIR]
                   [--attest sim|tpm2 [--sim-root FILE] [--tpm EP]] [relying-party flags]
                   [--show-attestation] MESSAGE
      Sends MESSAGE (UTF-8) along ROUTE and prints the reply. In ROUTE, /secure/NAME opens a
      secure channel to the listener NAME at the route so far and continues inside it.
      Without --identity, a fresh ephemeral identity is used. The relying-party flags apply to
      every channel of ROUTE; --show-attestation prints, on stderr, per channel:
      "attestation ID: status=S suite=S verifier=ID expires=ISO trust-vector=instance-identity:N,..."
      ROUTE example: /tcp/127.0.0.1:4000/service/forward_to_d/secure/secure/service/echo
  relying-party flags (node start, send):
      --require-attestation sim|tpm2|passport   (repeatable, in preference order)
      [--attest-mode handshake|post-handshake] [--reattest-interval MS]
      and an appraiser, either a verifier service (background check; its keys sign passports):
      --verifier ROUTE [--verifier-id ID]   e.g. /tcp/V:4100/secure/secure/service/verifier
      (its keys are fetched at start: the verifier must be up; --verifier-id pins its identifier)
      or a local verifier:
      [--trust-sim-root FILE]... [--trust-tpm-ak FILE]... [--reference-values FILE]
      [--trust-sim] [--min-svn N]
      (SPKI PEM files; reference values: JSON of one set or an array, as "attest pcrs" prints;
      sim is never affirming without --trust-sim)
  throughline attest pcrs --attest sim|tpm2 [--tpm EP] [--sim-root FILE] [--name NAME] [--home DIR]
      Prints this platform's reference values as one JSON line {"name":...,"pcrs":{"0":"hex",...}}.
  throughline attest ek --attest tpm2 --tpm EP [--out FILE] [--home DIR]
      Prints the TPM's endorsement key public area (TPM2B_PUBLIC) as hex, or writes it to FILE
      ("attest ek FILE"): what "verifier ek allow" takes.
  throughline verifier start [--tcp HOST:PORT]... [--ws HOST:PORT]... --identity NAME [--admin ID]...
                             [--trust-sim-root FILE]... [--trust-tpm-ak FILE]...
                             [--reference-values FILE] [--trust-sim] [--min-svn N]
                             [--enrol-tpm [--tofu-ek]]
                             [--result-ttl MS] [--key FILE] [--home DIR] [--name NAME]
      Runs a verifier service: listener "secure" (background checks, admin requests) and
      "secure-attested" (peers attest to it with sim/tpm2 evidence; passports are issued there).
      Result-signing key: --key FILE or DIR/verifier.key (Ed25519, created once). Prints
      "verifier key KID", "secure listener ID" and "listening tcp HOST:PORT". Stops on SIGINT/SIGTERM.
      --enrol-tpm: any peer may enrol a TPM AK by credential activation (the TPM proves the AK
      is its own); only EKs allowed by an admin ("verifier ek allow"), or any EK with --tofu-ek
      (trust on first use: labs, first provisioning). Enrolled AKs are kept in DIR/verifier-aks.json
      (allowed EKs in DIR/verifier-eks.json) and trusted again after a restart; prints
      "verifier enrolled KID".
  throughline verifier reference-values set --to ROUTE --identity NAME SETNAME PCR=HEX...
  throughline verifier reference-values set --to ROUTE --identity NAME --file FILE [SETNAME]
  throughline verifier reference-values remove --to ROUTE --identity NAME SETNAME
  throughline verifier reference-values list --to ROUTE --identity NAME
  throughline verifier policy show --to ROUTE --identity NAME
  throughline verifier ek allow --to ROUTE --identity NAME FILE
  throughline verifier ek list --to ROUTE --identity NAME
  throughline verifier policy set --to ROUTE --identity NAME [--id ID] [--min-svn N]
                             [--debug warning|contraindicated] [--trust-sim|--no-trust-sim]
                             [--require-reference-values yes|no]
      Admin requests over a secure channel (ROUTE e.g. /tcp/V:4100/secure/secure/service/verifier);
      NAME must be one of the verifier's --admin identities. [--trust ID]... [--timeout MS] [--home DIR]
  throughline identity create NAME [--home DIR] [--vault software|tpm --tpm unix:PATH|tcp:HOST:PORT|/dev/tpmrm0]
  throughline identity show NAME [--home DIR]
      Identities live in DIR/identities (default $THROUGHLINE_HOME or ~/.throughline).
      With --vault tpm the identity key is a non-exportable P-256 key in the TPM at --tpm,
      held by the TPM vault DIR/vaults/NAME.
  throughline version
  throughline help`

/** How long `node start --enrol-at` waits for the verifier service (ms). */
const DEFAULT_ENROL_TIMEOUT_MS = 10_000

/** Exit codes. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2 } as const

function usageError(message: string): ThroughlineError {
  return tlError('ERR_CLI_USAGE', message)
}

function logLevel(v: string | undefined): 'debug' | 'info' | 'warn' | 'error' | 'silent' {
  const level = v ?? 'info'
  if (level === 'debug' || level === 'info' || level === 'warn' || level === 'error' || level === 'silent') return level
  throw usageError(`--log-level must be debug, info, warn, error or silent (got "${level}")`)
}

function makeLogger(io: CliIO, level: ReturnType<typeof logLevel>, name: string): Logger {
  return level === 'silent' ? silentLogger : lineLogger(io.stderr, name, level)
}

/** Runs the command line `argv` (without `node` and the script). Resolves with the exit code. */
export async function main(argv: readonly string[], io: CliIO): Promise<number> {
  try {
    const [cmd, sub] = argv
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      io.stdout(USAGE)
      return cmd === undefined ? EXIT.USAGE : EXIT.OK
    }
    if (cmd === 'version' || cmd === '--version') {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
      io.stdout(pkg.version)
      return EXIT.OK
    }
    if (cmd === 'node' && sub === 'start') return await nodeStart(argv.slice(2), io)
    if (cmd === 'send') return await send(argv.slice(1), io)
    if (cmd === 'identity' && (sub === 'create' || sub === 'show')) return await identity(sub, argv.slice(2), io)
    if (cmd === 'attest' && sub === 'pcrs') return await attestPcrs(argv.slice(2), io)
    if (cmd === 'attest' && sub === 'ek') return await attestEk(argv.slice(2), io)
    if (cmd === 'verifier' && sub === 'start') return await verifierStart(argv.slice(2), io)
    if (cmd === 'verifier' && sub === 'reference-values') return await verifierReferenceValues(argv[2], argv.slice(3), io)
    if (cmd === 'verifier' && sub === 'policy') return await verifierPolicy(argv[2], argv.slice(3), io)
    if (cmd === 'verifier' && sub === 'ek') return await verifierEk(argv[2], argv.slice(3), io)
    throw usageError(`unknown command "${argv.join(' ')}" (try: throughline help)`)
  } catch (err) {
    if (isThroughlineError(err)) {
      io.stderr(`error: ${err.message}`)
      if (err.code === 'ERR_CLI_USAGE') io.stderr('run "throughline help" for usage')
      return err.code === 'ERR_CLI_USAGE' ? EXIT.USAGE : EXIT.FAILURE
    }
    io.stderr(`error: ${err instanceof Error ? err.message : String(err)}`)
    return EXIT.FAILURE
  }
}

function parse<const O extends NonNullable<ParseArgsConfig['options']>>(args: readonly string[], options: O) {
  try {
    return parseArgs({ args: [...args], options, allowPositionals: true, strict: true })
  } catch (err) {
    throw usageError((err as Error).message)
  }
}

/** `--attest`, `--sim-root` and `--tpm` as parseArgs options. */
const PROVER_OPTIONS = {
  attest: { type: 'string', multiple: true },
  'sim-root': { type: 'string' },
  tpm: { type: 'string' },
} as const

type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>

function proverFlags(values: FlagValues): ProverFlags {
  return { attest: values['attest'] as string[] | undefined, simRoot: values['sim-root'] as string | undefined, tpm: values['tpm'] as string | undefined }
}

/** A route text that must open a secure channel (verifier services answer only inside one). */
function secureRouteFlag(flag: string, text: string | undefined): void {
  if (text === undefined) return
  parseRouteSegments(text)
  if (!/\/secure\//.test(text)) throw usageError(`${flag} ROUTE must open a secure channel to the verifier, e.g. /tcp/HOST:PORT/secure/secure/service/verifier (got "${text}")`)
}

/** Resolves when the command should stop (io.signal aborted). */
function stopRequested(io: CliIO): Promise<void> {
  return new Promise<void>((resolve) => {
    if (io.signal === undefined) return
    if (io.signal.aborted) resolve()
    else io.signal.addEventListener('abort', () => resolve(), { once: true })
  })
}

/** Starts the --tcp/--ws(/--serial) listeners and prints a line for each. */
async function listenAll(
  transports: ReturnType<typeof addTransports>,
  values: { tcp?: string[] | undefined; ws?: string[] | undefined; serial?: string[] | undefined },
  allow: string[],
  io: CliIO,
): Promise<string[]> {
  const listeners: string[] = []
  for (const hp of values.tcp ?? []) {
    const l = await transports.tcp.listen(hp, { allow, transit: true })
    listeners.push(l.address)
    io.stdout(`listening tcp ${l.address}`)
  }
  for (const hp of values.ws ?? []) {
    const l = await transports.ws.listen(hp, { allow, transit: true })
    listeners.push(l.address)
    io.stdout(`listening ws ${l.address}`)
  }
  for (const spec of values.serial ?? []) {
    const m = /^(\/[^@]+)(?:@(\d+))?$/.exec(spec)
    if (m === null) throw usageError(`--serial takes PATH[@BAUD], e.g. /dev/ttyUSB0@115200 (got "${spec}")`)
    const l = await transports.serial.listen(m[1]!, { allow, transit: true, ...(m[2] ? { baudRate: Number(m[2]) } : {}) })
    listeners.push(l.address)
    io.stdout(`listening serial ${l.address}`)
  }
  return listeners
}

async function nodeStart(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, {
    tcp: { type: 'string', multiple: true },
    ws: { type: 'string', multiple: true },
    serial: { type: 'string', multiple: true },
    'relay-at': { type: 'string' },
    'relay-name': { type: 'string' },
    name: { type: 'string' },
    allow: { type: 'string', multiple: true },
    'log-level': { type: 'string' },
    identity: { type: 'string' },
    'secure-listener': { type: 'boolean' },
    trust: { type: 'string', multiple: true },
    home: { type: 'string' },
    ...PROVER_OPTIONS,
    'passport-from': { type: 'string' },
    'enrol-at': { type: 'string' },
    'early-evidence': { type: 'string' },
    'tcp-coalesce-max': { type: 'string' },
    ...RELYING_PARTY_OPTIONS,
  })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  const coalesce = values['tcp-coalesce-max']
  if (coalesce !== undefined && !/^\d{1,7}$/.test(coalesce)) throw usageError(`--tcp-coalesce-max takes a number of bytes, got "${coalesce}"`)
  if (values['secure-listener'] === true && values.identity === undefined) throw usageError('--secure-listener needs --identity NAME')
  const trust = trustOf(values.trust)
  const prover = proverFlags(values)
  const kinds = checkProverFlags(prover)
  const passportFrom = values['passport-from']
  const enrolAt = values['enrol-at']
  const relying = checkRelyingPartyFlags(values, passportFrom !== undefined || enrolAt !== undefined)
  const secureListener = values['secure-listener'] === true
  if (kinds.length > 0 && !secureListener) throw usageError('--attest needs --identity NAME --secure-listener (attestation is bound to secure channels)')
  if (passportFrom !== undefined && kinds.length === 0) throw usageError('--passport-from needs --attest sim|tpm2 (the node attests itself to the verifier for its passport)')
  const early = values['early-evidence']
  if (early !== undefined && early !== 'always' && early !== 'never') throw usageError('--early-evidence takes always or never')
  if (early !== undefined && kinds.length === 0) throw usageError('--early-evidence needs --attest sim|tpm2')
  if (relying !== undefined && !secureListener) throw usageError('--require-attestation needs --identity NAME --secure-listener (it is what the listener requires of its peers)')
  if (enrolAt !== undefined && !kinds.includes('tpm2')) throw usageError('--enrol-at needs --attest tpm2 --tpm EP (it enrols the TPM attestation key)')
  secureRouteFlag('--passport-from', passportFrom)
  secureRouteFlag('--enrol-at', enrolAt)
  secureRouteFlag('--verifier', values.verifier)
  const relayAt = values['relay-at'] as string | undefined
  const relayName = values['relay-name'] as string | undefined
  if ((relayAt === undefined) !== (relayName === undefined)) throw usageError('--relay-at and --relay-name go together')
  const relayRoute = relayAt === undefined ? undefined : parseRoute(relayAt)
  const level = logLevel(values['log-level'] as string | undefined)
  const name = (values.name as string | undefined) ?? 'node'
  const home = values.home ?? defaultHome()
  const logger = makeLogger(io, level, `throughline:${name}`)
  const node = await new Node({ name, logger }).start()
  const transports = addTransports(node, coalesce === undefined ? {} : { coalesceMaxPayload: Number(coalesce) })
  startEcho(node)
  new RelayService(node)
  // what network input may reach on this node: its services, plus any --allow
  const closers: (() => Promise<void>)[] = []
  const extra = (values.allow as string[] | undefined) ?? []
  const allow = ['echo', RELAY_ADDRESS, `${FORWARDER_PREFIX}*`, ...extra]
  let listeners: string[] = []
  let enrol: (() => Promise<void>) | undefined
  try {
    if (secureListener) {
      const loaded = await loadIdentity(home, values.identity!)
      closers.push(loaded.close)
      const id = loaded.identity
      // what this node proves about itself, on every channel (listener and outgoing)
      const proving: AttestationOptions = {}
      // never: no evidence in handshake message 2 (the initiator is not yet authenticated); a round after it
      if (early !== undefined) proving.earlyEvidence = early
      let tpmAk: { vault: TpmVaultInUse['vault']; akHandle: string } | undefined
      for (const kind of kinds) {
        const platform = await openProver(kind, home, prover, loaded.tpm)
        closers.unshift(platform.close) // before the identity's vault, which it may share
        ;(proving.attesters ??= []).push(platform.attester)
        for (const line of platform.lines) io.stdout(line)
        if (platform.tpm !== undefined) tpmAk = platform.tpm
      }
      const channels = new SecureChannels(node, { identity: id, attestation: proving })
      const verifierTrust = values['verifier-id'] === undefined ? trustAny() : trustIdentifiers([values['verifier-id']])
      if (enrolAt !== undefined && tpmAk !== undefined) {
        const ak = tpmAk
        // after the listeners are up: the AK's credential activation with the verifier service at --enrol-at
        enrol = async () => {
          const { route } = await resolveRoute(enrolAt, channels, { trust: verifierTrust, handshakeTimeout: DEFAULT_ENROL_TIMEOUT_MS, signal: AbortSignal.timeout(DEFAULT_ENROL_TIMEOUT_MS) })
          io.stdout(`attest tpm2 enrolled ${await enrolWithVerifier(node, route, ak.vault, ak.akHandle, DEFAULT_ENROL_TIMEOUT_MS)}`)
        }
      }
      if (passportFrom !== undefined) {
        const link = new VerifierLink(channels, passportFrom, verifierTrust)
        proving.passport = new PassportClient(node, { route: () => link.route() })
      }
      const required = relying === undefined ? undefined : await relyingPartyOptions(relying, channels)
      // what decrypted messages may reach: the echo service and any --allow
      await channels.listen('secure', { trust, allow: ['echo', ...extra], ...(required === undefined ? {} : { attestation: required }) })
      allow.push('secure')
      io.stdout(`secure listener ${id.identifier}`)
    }
    listeners = await listenAll(transports, values, allow, io)
    await enrol?.()
  } catch (err) {
    await node.stop()
    for (const c of closers) await c()
    throw err
  }
  let client: RelayClient | undefined
  if (relayRoute !== undefined && relayName !== undefined) {
    // a node registered at a relay is a gateway: forwarded traffic may continue over its links
    client = new RelayClient(node, { relayRoute, name: relayName, allow, transit: true })
    let lastError = ''
    client.on('registered', (ev: { name: string }) => {
      lastError = ''
      io.stdout(`relay registered ${ev.name}`)
    })
    client.on('error', (err: ThroughlineError) => {
      // one line per distinct failure, not one per retry
      if (err.message !== lastError) io.stderr(`relay registration failed (retrying): ${err.message}`)
      lastError = err.message
    })
    client.start()
  }
  io.onReady?.({ node, listeners })
  await stopRequested(io)
  client?.stop()
  await node.stop()
  for (const c of closers) await c()
  logger.info('stopped', { drops: node.dropCount() })
  return EXIT.OK
}

async function send(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, {
    to: { type: 'string' },
    timeout: { type: 'string' },
    'log-level': { type: 'string' },
    identity: { type: 'string' },
    trust: { type: 'string', multiple: true },
    home: { type: 'string' },
    ...PROVER_OPTIONS,
    ...RELYING_PARTY_OPTIONS,
    'show-attestation': { type: 'boolean' },
  })
  const to = values.to as string | undefined
  if (to === undefined) throw usageError('send needs --to ROUTE')
  if (positionals.length !== 1) throw usageError('send needs exactly one MESSAGE argument (quote it if it has spaces)')
  const timeoutText = (values.timeout as string | undefined) ?? '10000'
  const timeout = Number(timeoutText)
  if (!Number.isInteger(timeout) || timeout <= 0) throw usageError(`--timeout must be a positive number of milliseconds (got "${timeoutText}")`)
  const trust = trustOf(values.trust)
  const prover = proverFlags(values)
  const kinds = checkProverFlags(prover)
  const relying = checkRelyingPartyFlags(values)
  const show = values['show-attestation'] === true
  if (show && relying === undefined) throw usageError('--show-attestation needs --require-attestation SUITE')
  const secure = /\/secure\//.test(to)
  if (!secure && (kinds.length > 0 || relying !== undefined)) throw usageError('--attest and --require-attestation are for routes that open secure channels (/secure/NAME)')
  secureRouteFlag('--verifier', values.verifier)
  const level = logLevel((values['log-level'] as string | undefined) ?? 'silent')
  // parse before starting anything, so a bad route fails fast
  parseRouteSegments(to)
  const home = values.home ?? defaultHome()
  const node = await new Node({ name: 'send', logger: makeLogger(io, level, 'throughline:send') }).start()
  addTransports(node)
  const closers: (() => Promise<void>)[] = []
  const deadline = AbortSignal.timeout(timeout)
  const signal = io.signal ? AbortSignal.any([io.signal, deadline]) : deadline
  try {
    let channels: SecureChannels | undefined
    let required: AttestationOptions | undefined
    if (secure) {
      let id: IdentitySigner & { readonly identifier: string } = SoftwareIdentity.generate()
      let tpm: TpmVaultInUse | undefined
      if (values.identity !== undefined) {
        const loaded = await loadIdentity(home, values.identity)
        id = loaded.identity
        tpm = loaded.tpm
        closers.push(loaded.close)
      }
      const proving: AttestationOptions = {}
      for (const kind of kinds) {
        const platform = await openProver(kind, home, prover, tpm)
        closers.unshift(platform.close)
        ;(proving.attesters ??= []).push(platform.attester)
      }
      channels = new SecureChannels(node, { identity: id, attestation: proving })
      if (relying !== undefined) required = await relyingPartyOptions(relying, channels, { timeout })
    }
    const resolved = await resolveRoute(to, channels, { trust, signal, handshakeTimeout: timeout, ...(required === undefined ? {} : { attestation: required }) })
    if (show) {
      for (const ch of resolved.channels) {
        if (ch.attestation !== undefined) io.stderr(attestationLine(ch.peer?.identifier ?? 'unknown', ch.attestation))
      }
    }
    const reply = await node.request(resolved.route, Buffer.from(positionals[0]!, 'utf8'), { timeout, signal: io.signal ?? new AbortController().signal })
    io.stdout(Buffer.from(reply.payload).toString('utf8'))
    return EXIT.OK
  } catch (err) {
    if (isThroughlineError(err)) {
      const code = err.code === 'ERR_ABORTED' && deadline.aborted ? 'ERR_TIMEOUT' : err.code
      const hint: Partial<Record<ErrorCode, string>> = {
        ERR_TIMEOUT: `no reply within ${timeout} ms from ${to} (is every hop up, and does the last address exist there?)`,
        ERR_HANDSHAKE_TIMEOUT: `no secure channel within ${timeout} ms along ${to}`,
        ERR_CONNECTION_REFUSED: `cannot reach the first hop of ${to}`,
      }
      const detail = err.message.replace(/^ERR_[A-Z_]+: /, '')
      throw new ThroughlineError(code, hint[code] ? `${hint[code]}: ${detail}` : detail, { cause: err })
    }
    throw err
  } finally {
    await node.stop()
    for (const c of closers) await c()
  }
}

async function attestPcrs(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, { attest: { type: 'string' }, tpm: { type: 'string' }, 'sim-root': { type: 'string' }, name: { type: 'string' }, home: { type: 'string' } })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  if (values.attest === undefined) throw usageError('attest pcrs needs --attest sim|tpm2')
  const flags: ProverFlags = { attest: [values.attest], simRoot: values['sim-root'], tpm: values.tpm }
  const kind = checkProverFlags(flags)[0]!
  const set = await platformReferenceSet(kind, values.home ?? defaultHome(), values.name ?? `${kind}-platform`, flags)
  io.stdout(JSON.stringify(set))
  return EXIT.OK
}

/** `attest ek`: the TPM's EK public (TPM2B_PUBLIC) as hex on stdout, or into --out FILE (raw bytes). */
async function attestEk(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, { attest: { type: 'string' }, tpm: { type: 'string' }, home: { type: 'string' }, out: { type: 'string' } })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  if (values.attest !== 'tpm2') throw usageError('attest ek needs --attest tpm2 --tpm EP (only a TPM has an endorsement key)')
  const flags: ProverFlags = { attest: [values.attest], tpm: values.tpm }
  checkProverFlags(flags)
  const ek = await tpmEkPublic(values.home ?? defaultHome(), flags)
  if (values.out !== undefined) {
    await writeFileAtomic(values.out, ek, 0o644)
    io.stdout(`attest ek ${values.out}`)
  } else {
    io.stdout(Buffer.from(ek).toString('hex'))
  }
  return EXIT.OK
}

/** `verifier ek allow|list`: the EKs a verifier service accepts at AK enrolment (admins). */
async function verifierEk(op: string | undefined, args: readonly string[], io: CliIO): Promise<number> {
  if (op !== 'allow' && op !== 'list') throw usageError(`verifier ek takes allow or list (got "${op ?? ''}")`)
  const { values, positionals } = parse(args, ADMIN_OPTIONS)
  if (values.to === undefined) throw usageError(`verifier ek ${op} needs --to ROUTE (e.g. /tcp/HOST:PORT/secure/secure/service/verifier)`)
  if (values.identity === undefined) throw usageError(`verifier ek ${op} needs --identity NAME (an admin identity of the verifier)`)
  secureRouteFlag('--to', values.to)
  const requests: Record<string, unknown>[] = []
  if (op === 'allow') {
    if (positionals.length !== 1) throw usageError('verifier ek allow needs exactly one FILE (the EK public from "throughline attest ek")')
    requests.push({ op: 'allowEk', ekPublic: await readEkFile(positionals[0]!) })
  } else {
    if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
    requests.push({ op: 'listEks' })
  }
  return runAdmin(values, requests, io, (req, r) => {
    if (req['op'] === 'allowEk') io.stdout(r['added'] === true ? 'ek allowed' : 'ek already allowed')
    else for (const e of Array.isArray(r['eks']) ? r['eks'] : []) io.stdout(String(e))
  })
}

async function verifierStart(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, {
    tcp: { type: 'string', multiple: true },
    ws: { type: 'string', multiple: true },
    identity: { type: 'string' },
    admin: { type: 'string', multiple: true },
    ...LOCAL_VERIFIER_OPTIONS,
    'result-ttl': { type: 'string' },
    key: { type: 'string' },
    home: { type: 'string' },
    name: { type: 'string' },
    'log-level': { type: 'string' },
    'enrol-tpm': { type: 'boolean' },
    'tofu-ek': { type: 'boolean' },
  })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  const enrolTpm = values['enrol-tpm'] === true
  const tofuEk = values['tofu-ek'] === true
  if (tofuEk && !enrolTpm) throw usageError('--tofu-ek is for --enrol-tpm (it says which EKs AK enrolment accepts)')
  if (values.identity === undefined) throw usageError('verifier start needs --identity NAME (its secure channels and result identifier)')
  const admins = values.admin ?? []
  try {
    trustIdentifiers(admins)
  } catch (err) {
    throw usageError(`--admin: ${(err as Error).message.replace(/^ERR_[A-Z_]+: /, '')}`)
  }
  const plan = checkLocalVerifierFlags(values)
  const home = values.home ?? defaultHome()
  // AKs enrolled through this service are kept in its home and trusted again after a restart
  const aksPath = join(home, 'verifier-aks.json')
  const storedAks = await readStoredAks(aksPath)
  if (plan.simRoots.length === 0 && plan.tpmAks.length === 0 && !enrolTpm && storedAks.length === 0) {
    throw usageError('verifier start needs a trust anchor: --trust-sim-root FILE, --trust-tpm-ak FILE or --enrol-tpm')
  }
  if (plan.trustSim && plan.simRoots.length === 0) throw usageError('--trust-sim needs --trust-sim-root FILE')
  const ttl = intFlag(values['result-ttl'], '--result-ttl', 1)
  const level = logLevel(values['log-level'])
  const name = values.name ?? 'verifier'
  const logger = makeLogger(io, level, `throughline:${name}`)
  const node = await new Node({ name, logger }).start()
  const transports = addTransports(node)
  const closers: (() => Promise<void>)[] = []
  let listeners: string[] = []
  try {
    const loaded = await loadIdentity(home, values.identity)
    closers.push(loaded.close)
    const id = loaded.identity
    const verifier = await localVerifier(plan, id.identifier, ttl)
    // Reference values set by admins are kept in the home and come back after a restart.
    const stored = join(home, 'verifier-reference-values.json')
    if (existsSync(stored)) for (const set of await readReferenceValues(stored)) verifier.referenceValues.add(set)
    for (const a of storedAks) verifier.enrolAk(new Uint8Array(Buffer.from(a.spki, 'base64')))
    const eksPath = join(home, 'verifier-eks.json')
    const allowedEks = await readStoredEks(eksPath)
    let saving: Promise<void> = Promise.resolve()
    const signer = VerifierKey.fromPrivateKey(await loadVerifierKey(values.key ?? join(home, 'verifier.key')))
    const channels = new SecureChannels(node, { identity: id })
    await channels.listen('secure', { allow: ['verifier'] })
    const tpm2 = plan.tpmAks.length > 0 || enrolTpm || storedAks.length > 0
    const require = [...(tpm2 ? (['tpm2'] as const) : []), ...(plan.simRoots.length > 0 ? (['sim'] as const) : [])]
    const attested = await channels.listen('secure-attested', { allow: ['verifier'], attestation: { require, verifier } })
    // So does a policy an admin set.
    const storedPolicy = join(home, 'verifier-policy.json')
    const policy = await readJsonIfExists(storedPolicy, 'the stored policy')
    if (policy !== undefined) verifier.setPolicy(checkPolicy(policy))
    new VerifierService(node, {
      verifier,
      signer,
      admins,
      listener: attested,
      onReferenceValuesChanged: (sets) => writeFileAtomic(stored, `${JSON.stringify(sets, null, 1)}\n`),
      onPolicyChanged: (policy) => writeFileAtomic(storedPolicy, `${JSON.stringify(policy, null, 1)}\n`),
      enrolTpm,
      tofuEk,
      allowedEks,
      onEksChanged: (eks) => writeFileAtomic(eksPath, `${JSON.stringify(eks.map((e) => Buffer.from(e).toString('hex')), null, 1)}\n`),
      onAkEnrolled: (spki, r) => {
        if (storedAks.some((a) => a.kid === r.kid)) return
        const entry: StoredAk = { kid: r.kid, spki: Buffer.from(spki).toString('base64'), ek: Buffer.from(r.ekPoint).toString('hex'), peer: r.peer, enrolled: new Date().toISOString() }
        storedAks.push(entry)
        io.stdout(`verifier enrolled ${r.kid}`)
        const text = `${JSON.stringify(storedAks, null, 1)}\n`
        // one write after the other, so the file ends with the latest list
        saving = saving.catch(() => {}).then(() => writeFileAtomic(aksPath, text))
        return saving
      },
    })
    io.stdout(`verifier key ${signer.kid}`)
    io.stdout(`secure listener ${id.identifier}`)
    listeners = await listenAll(transports, values, ['secure', 'secure-attested'], io)
  } catch (err) {
    await node.stop()
    for (const c of closers) await c()
    throw err
  }
  io.onReady?.({ node, listeners })
  await stopRequested(io)
  await node.stop()
  for (const c of closers) await c()
  logger.info('stopped', { drops: node.dropCount() })
  return EXIT.OK
}

/** `verifier reference-values set|remove|list`: admin requests to a verifier service. */
async function verifierReferenceValues(op: string | undefined, args: readonly string[], io: CliIO): Promise<number> {
  if (op !== 'set' && op !== 'remove' && op !== 'list') throw usageError(`verifier reference-values takes set, remove or list (got "${op ?? ''}")`)
  const { values, positionals } = parse(args, { ...ADMIN_OPTIONS, file: { type: 'string' } })
  if (values.to === undefined) throw usageError(`verifier reference-values ${op} needs --to ROUTE (e.g. /tcp/HOST:PORT/secure/secure/service/verifier)`)
  if (values.identity === undefined) throw usageError(`verifier reference-values ${op} needs --identity NAME (an admin identity of the verifier)`)
  secureRouteFlag('--to', values.to)
  if (values.file !== undefined && op !== 'set') throw usageError('--file is for reference-values set')
  const requests: Record<string, unknown>[] = []
  if (op === 'set') {
    if (values.file !== undefined) {
      if (positionals.length > 1) throw usageError('reference-values set --file FILE takes at most a SETNAME (the PCRs come from the file)')
      const sets = await readReferenceValues(values.file)
      if (positionals.length === 1 && sets.length !== 1) throw usageError(`SETNAME renames one set, and ${values.file} holds ${sets.length}`)
      for (const s of sets) requests.push({ op: 'setReferenceValues', name: positionals[0] ?? s.name, pcrs: s.pcrs, ...(s.expires === undefined ? {} : { expires: s.expires }) })
    } else {
      const [setName, ...pairs] = positionals
      if (setName === undefined || pairs.length === 0) throw usageError('reference-values set needs SETNAME PCR=HEX... (or --file FILE)')
      const pcrs: Record<string, string> = {}
      for (const p of pairs) {
        const m = /^(\d{1,2})=([0-9a-fA-F]{64})$/.exec(p)
        if (m === null || Number(m[1]) > 23) throw usageError(`"${p}" is not PCR=HEX (a PCR 0..23 and 64 hex digits)`)
        pcrs[String(Number(m[1]))] = m[2]!.toLowerCase()
      }
      requests.push({ op: 'setReferenceValues', name: setName, pcrs })
    }
  } else if (op === 'remove') {
    if (positionals.length !== 1) throw usageError('reference-values remove needs exactly one SETNAME')
    requests.push({ op: 'removeReferenceValues', name: positionals[0] })
  } else {
    if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
    requests.push({ op: 'listReferenceValues' })
  }
  return runAdmin(values, requests, io, (req, r) => {
    if (req['op'] === 'setReferenceValues') io.stdout(`reference values set ${String(req['name'])}`)
    else if (req['op'] === 'removeReferenceValues') {
      if (r['removed'] !== true) throw tlError('ERR_INVALID_ARGUMENT', `the verifier has no reference-value set named "${String(req['name'])}"`)
      io.stdout(`reference values removed ${String(req['name'])}`)
    } else {
      for (const s of Array.isArray(r['sets']) ? r['sets'] : []) io.stdout(JSON.stringify(s))
    }
  })
}

/** Flags every admin command takes. */
const ADMIN_OPTIONS = {
  to: { type: 'string' },
  identity: { type: 'string' },
  trust: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  home: { type: 'string' },
} as const

/**
 * Sends admin `requests` to the verifier service at `values.to` over a secure channel opened with
 * the admin identity `values.identity`, one after the other; `onReply` prints each answer.
 */
async function runAdmin(
  values: { to?: string | undefined; identity?: string | undefined; trust?: string[] | undefined; timeout?: string | undefined; home?: string | undefined },
  requests: Record<string, unknown>[] | ((ask: (req: Record<string, unknown>) => Promise<Record<string, unknown>>) => Promise<Record<string, unknown>[]>),
  io: CliIO,
  onReply: (req: Record<string, unknown>, reply: Record<string, unknown>) => void,
): Promise<number> {
  const timeout = intFlag(values.timeout, '--timeout', 1) ?? 10_000
  const trust = trustOf(values.trust)
  const home = values.home ?? defaultHome()
  const node = await new Node({ name: 'admin', logger: silentLogger }).start()
  addTransports(node)
  let close = async (): Promise<void> => {}
  try {
    const loaded = await loadIdentity(home, values.identity!)
    close = loaded.close
    const channels = new SecureChannels(node, { identity: loaded.identity })
    const { route } = await resolveRoute(values.to!, channels, { trust, handshakeTimeout: timeout, signal: io.signal ?? AbortSignal.timeout(timeout) })
    const ask = (req: Record<string, unknown>): Promise<Record<string, unknown>> => verifierRequest(node, route, req, timeout)
    for (const req of typeof requests === 'function' ? await requests(ask) : requests) onReply(req, await ask(req))
    return EXIT.OK
  } finally {
    await node.stop()
    await close()
  }
}

/** `verifier policy show|set`: the verifier service's appraisal policy (admins). */
async function verifierPolicy(op: string | undefined, args: readonly string[], io: CliIO): Promise<number> {
  if (op !== 'show' && op !== 'set') throw usageError(`verifier policy takes show or set (got "${op ?? ''}")`)
  const { values, positionals } = parse(args, {
    ...ADMIN_OPTIONS,
    id: { type: 'string' },
    'min-svn': { type: 'string' },
    debug: { type: 'string' },
    'trust-sim': { type: 'boolean' },
    'no-trust-sim': { type: 'boolean' },
    'require-reference-values': { type: 'string' },
  })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  if (values.to === undefined) throw usageError(`verifier policy ${op} needs --to ROUTE (e.g. /tcp/HOST:PORT/secure/secure/service/verifier)`)
  if (values.identity === undefined) throw usageError(`verifier policy ${op} needs --identity NAME (an admin identity of the verifier)`)
  secureRouteFlag('--to', values.to)
  const changes: Record<string, unknown> = {}
  if (values.id !== undefined) changes['id'] = values.id
  const minSvn = intFlag(values['min-svn'], '--min-svn', 0)
  if (minSvn !== undefined) changes['minSvn'] = minSvn
  if (values.debug !== undefined) {
    if (values.debug !== 'warning' && values.debug !== 'contraindicated') throw usageError('--debug takes warning or contraindicated')
    changes['debug'] = values.debug
  }
  if (values['trust-sim'] === true && values['no-trust-sim'] === true) throw usageError('--trust-sim and --no-trust-sim exclude each other')
  if (values['trust-sim'] === true) changes['trustSim'] = true
  if (values['no-trust-sim'] === true) changes['trustSim'] = false
  const rrv = values['require-reference-values']
  if (rrv !== undefined) {
    if (rrv !== 'yes' && rrv !== 'no') throw usageError('--require-reference-values takes yes or no')
    changes['requireReferenceValues'] = rrv === 'yes'
  }
  if (op === 'show' && Object.keys(changes).length > 0) throw usageError('verifier policy show takes no policy flags')
  if (op === 'set' && Object.keys(changes).length === 0) throw usageError('verifier policy set needs at least one of --id, --min-svn, --debug, --trust-sim, --no-trust-sim, --require-reference-values')
  return runAdmin(
    values,
    async (ask) => {
      if (op === 'show') return [{ op: 'getPolicy' }]
      const current = (await ask({ op: 'getPolicy' }))['policy'] as Record<string, unknown>
      return [{ op: 'setPolicy', policy: { ...current, ...changes } }, { op: 'getPolicy' }]
    },
    io,
    (req, r) => {
      if (req['op'] === 'getPolicy') io.stdout(JSON.stringify(r['policy']))
    },
  )
}

/**
 * Loads a saved identity: a software one (the key in the identity file) or a TPM one (the key in
 * a TPM vault; the TPM code is loaded only then). `close` releases the vault; `tpm` is that vault
 * (an attester on the same TPM keeps its AK there rather than opening the TPM twice).
 */
async function loadIdentity(home: string, name: string): Promise<{ identity: IdentitySigner & { readonly identifier: string }; close: () => Promise<void>; tpm?: TpmVaultInUse }> {
  const file = await readFile(join(home, 'identities', `${name}.json`), 'utf8').catch(() => undefined)
  let kind: unknown
  try {
    kind = file === undefined ? undefined : (JSON.parse(file) as { kind?: unknown }).kind
  } catch {
    kind = undefined // IdentityStore.load reports the malformed file
  }
  if (kind === 'tpm') {
    const { TpmIdentityStore } = await import('../vault/tpm-identity.ts')
    const store = new TpmIdentityStore(home)
    const { vault, identity, record } = await store.open(name)
    return { identity, close: () => vault.close(), tpm: { vault, endpoint: record.vault.endpoint, dir: store.vaultDir(name) } }
  }
  return { identity: await new IdentityStore(home).load(name), close: async () => {} }
}

/** Every transport the CLI speaks: TCP, WebSocket, serial (serialport is loaded only when a port is opened). */
function addTransports(node: Node, tcpOptions: TcpTransportOptions = {}): { tcp: TcpTransport; ws: WebSocketTransport; serial: SerialTransport } {
  const tcp = new TcpTransport(node, tcpOptions)
  const ws = new WebSocketTransport(node)
  const serial = new SerialTransport(node)
  node.addTransport(tcp)
  node.addTransport(ws)
  node.addTransport(serial)
  return { tcp, ws, serial }
}

function trustOf(ids: unknown): TrustPolicy {
  const list = (ids as string[] | undefined) ?? []
  if (list.length === 0) return trustAny()
  try {
    return trustIdentifiers(list)
  } catch (err) {
    throw usageError((err as Error).message)
  }
}

async function identity(sub: 'create' | 'show', args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, { home: { type: 'string' }, vault: { type: 'string' }, tpm: { type: 'string' } })
  if (positionals.length !== 1) throw usageError(`identity ${sub} needs exactly one NAME`)
  const home = values.home ?? defaultHome()
  const name = positionals[0]!
  const kind = values.vault ?? 'software'
  if (sub === 'show' && (values.vault !== undefined || values.tpm !== undefined)) throw usageError('identity show takes no --vault or --tpm')
  if (kind !== 'software' && kind !== 'tpm') throw usageError(`--vault must be software or tpm (got "${kind}")`)
  if (kind === 'software' && values.tpm !== undefined) throw usageError('--tpm needs --vault tpm')
  if (kind === 'tpm' && values.tpm === undefined) throw usageError('--vault tpm needs --tpm unix:PATH|tcp:HOST:PORT|/dev/tpmrm0')
  // the TPM vault is loaded only when a command needs it
  const tpmStore = async () => new (await import('../vault/tpm-identity.ts')).TpmIdentityStore(home)
  if (sub === 'create' && kind === 'tpm') {
    const { parseTpmEndpoint } = await import('../vault/tpm/transport.ts')
    try {
      parseTpmEndpoint(values.tpm!)
    } catch (err) {
      throw usageError((err as Error).message.replace(/^ERR_INVALID_ARGUMENT: /, ''))
    }
    io.stdout((await (await tpmStore()).create(name, values.tpm!)).identifier)
    return EXIT.OK
  }
  if (sub === 'show') {
    const store = await tpmStore()
    const record = await store.read(name)
    if (record !== undefined) {
      io.stdout(record.identifier)
      io.stdout(`public key (p256): ${Buffer.from(record.publicKey, 'base64').toString('hex')}`)
      io.stdout(`tpm vault: ${store.vaultDir(name)} (key ${record.vault.handle}, TPM ${record.vault.endpoint})`)
      return EXIT.OK
    }
  }
  const store = new IdentityStore(home)
  const id = sub === 'create' ? await store.create(name) : await store.load(name)
  io.stdout(id.identifier)
  if (sub === 'show') io.stdout(`public key (ed25519): ${Buffer.from(id.publicKey).toString('hex')}`)
  return EXIT.OK
}
