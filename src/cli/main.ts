/**
 * The `throughline` command.
 *
 * ```
 * throughline node start [--tcp HOST:PORT]... [--relay-at ROUTE --relay-name NAME] [--name NAME]
 *                        [--allow NAME]... [--log-level debug|info|warn|error|silent]
 * throughline send --to ROUTE [--timeout MS] MESSAGE
 * throughline help | version
 * ```
 *
 * `main(argv, io)` returns the exit code; the `bin` file calls it with the process's streams.
 * Lines meant for scripts go to stdout (`listening tcp HOST:PORT`, `relay registered NAME`, a
 * reply); logs and errors go to stderr as one line each.
 *
 * @module
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { type ErrorCode, isThroughlineError, ThroughlineError, tlError } from '../errors.ts'
import { type Logger, lineLogger, silentLogger } from '../router/logger.ts'
import { Node } from '../router/node.ts'
import { parseRoute, parseRouteSegments } from '../router/route.ts'
import { startEcho } from '../services/echo.ts'
import { FORWARDER_PREFIX, RELAY_ADDRESS, RelayClient, RelayService } from '../services/relay.ts'
import { TcpTransport } from '../transports/tcp.ts'
import { WebSocketTransport } from '../transports/websocket.ts'
import { SerialTransport } from '../transports/serial.ts'
import { IdentityStore, type IdentitySigner, SoftwareIdentity, defaultHome } from '../channel/identity.ts'
import { resolveRoute } from '../channel/resolve.ts'
import { SecureChannels } from '../channel/secure-channel.ts'
import { type TrustPolicy, trustAny, trustIdentifiers } from '../channel/trust.ts'
import '../channel/index.ts'

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
                         [--allow NAME]... [--home DIR] [--log-level debug|info|warn|error|silent]
      Runs a node in the foreground with the echo and relay services, and with
      --secure-listener a secure channel listener at "secure" (peers: any identity, or the
      --trust identifiers). Prints "listening tcp|ws HOST:PORT" and "listening serial PATH"
      per listener, "secure listener
      ID" and "relay registered NAME" after each successful relay registration.
      Stops on SIGINT/SIGTERM.
  throughline send --to ROUTE [--timeout MS] [--identity NAME] [--trust ID]... [--home DIR] MESSAGE
      Sends MESSAGE (UTF-8) along ROUTE and prints the reply. In ROUTE, /secure/NAME opens a
      secure channel to the listener NAME at the route so far and continues inside it.
      Without --identity, a fresh ephemeral identity is used.
      ROUTE example: /tcp/127.0.0.1:4000/service/forward_to_d/secure/secure/service/echo
  throughline identity create NAME [--home DIR] [--vault software|tpm --tpm unix:PATH|tcp:HOST:PORT|/dev/tpmrm0]
  throughline identity show NAME [--home DIR]
      Identities live in DIR/identities (default $THROUGHLINE_HOME or ~/.throughline).
      With --vault tpm the identity key is a non-exportable P-256 key in the TPM at --tpm,
      held by the TPM vault DIR/vaults/NAME (node start --identity does not load these yet).
  throughline version
  throughline help`

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
  })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  if (values['secure-listener'] === true && values.identity === undefined) throw usageError('--secure-listener needs --identity NAME')
  const trust = trustOf(values.trust)
  const relayAt = values['relay-at'] as string | undefined
  const relayName = values['relay-name'] as string | undefined
  if ((relayAt === undefined) !== (relayName === undefined)) throw usageError('--relay-at and --relay-name go together')
  const relayRoute = relayAt === undefined ? undefined : parseRoute(relayAt)
  const level = logLevel(values['log-level'] as string | undefined)
  const name = (values.name as string | undefined) ?? 'node'
  const logger = makeLogger(io, level, `throughline:${name}`)
  const node = await new Node({ name, logger }).start()
  const { tcp, ws, serial } = addTransports(node)
  startEcho(node)
  new RelayService(node)
  // what network input may reach on this node: its services, plus any --allow
  const closers: (() => Promise<void>)[] = []
  const extra = (values.allow as string[] | undefined) ?? []
  const allow = ['echo', RELAY_ADDRESS, `${FORWARDER_PREFIX}*`, ...extra]
  const listeners: string[] = []
  try {
    if (values['secure-listener'] === true) {
      const { identity: id, close } = await loadIdentity(values.home ?? defaultHome(), values.identity!)
      closers.push(close)
      const channels = new SecureChannels(node, { identity: id })
      // what decrypted messages may reach: the echo service and any --allow
      await channels.listen('secure', { trust, allow: ['echo', ...extra] })
      allow.push('secure')
      io.stdout(`secure listener ${id.identifier}`)
    }
    for (const hp of (values.tcp as string[] | undefined) ?? []) {
      const l = await tcp.listen(hp, { allow, transit: true })
      listeners.push(l.address)
      io.stdout(`listening tcp ${l.address}`)
    }
    for (const hp of (values.ws as string[] | undefined) ?? []) {
      const l = await ws.listen(hp, { allow, transit: true })
      listeners.push(l.address)
      io.stdout(`listening ws ${l.address}`)
    }
    for (const spec of (values.serial as string[] | undefined) ?? []) {
      const m = /^(\/[^@]+)(?:@(\d+))?$/.exec(spec)
      if (m === null) throw usageError(`--serial takes PATH[@BAUD], e.g. /dev/ttyUSB0@115200 (got "${spec}")`)
      const l = await serial.listen(m[1]!, { allow, transit: true, ...(m[2] ? { baudRate: Number(m[2]) } : {}) })
      listeners.push(l.address)
      io.stdout(`listening serial ${l.address}`)
    }
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
  await new Promise<void>((resolve) => {
    if (io.signal === undefined) return
    if (io.signal.aborted) resolve()
    else io.signal.addEventListener('abort', () => resolve(), { once: true })
  })
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
  })
  const to = values.to as string | undefined
  if (to === undefined) throw usageError('send needs --to ROUTE')
  if (positionals.length !== 1) throw usageError('send needs exactly one MESSAGE argument (quote it if it has spaces)')
  const timeoutText = (values.timeout as string | undefined) ?? '10000'
  const timeout = Number(timeoutText)
  if (!Number.isInteger(timeout) || timeout <= 0) throw usageError(`--timeout must be a positive number of milliseconds (got "${timeoutText}")`)
  const trust = trustOf(values.trust)
  const level = logLevel((values['log-level'] as string | undefined) ?? 'silent')
  // parse before starting anything, so a bad route fails fast
  parseRouteSegments(to)
  const node = await new Node({ name: 'send', logger: makeLogger(io, level, 'throughline:send') }).start()
  addTransports(node)
  const closers: (() => Promise<void>)[] = []
  const deadline = AbortSignal.timeout(timeout)
  const signal = io.signal ? AbortSignal.any([io.signal, deadline]) : deadline
  try {
    let channels: SecureChannels | undefined
    if (/\/secure\//.test(to)) {
      let id: IdentitySigner & { readonly identifier: string } = SoftwareIdentity.generate()
      if (values.identity !== undefined) {
        const loaded = await loadIdentity(values.home ?? defaultHome(), values.identity)
        id = loaded.identity
        closers.push(loaded.close)
      }
      channels = new SecureChannels(node, { identity: id })
    }
    const { route } = await resolveRoute(to, channels, { trust, signal, handshakeTimeout: timeout })
    const reply = await node.request(route, Buffer.from(positionals[0]!, 'utf8'), { timeout, signal: io.signal ?? new AbortController().signal })
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

/**
 * Loads a saved identity: a software one (the key in the identity file) or a TPM one (the key in
 * a TPM vault; the TPM code is loaded only then). `close` releases the vault.
 */
async function loadIdentity(home: string, name: string): Promise<{ identity: IdentitySigner & { readonly identifier: string }; close: () => Promise<void> }> {
  const file = await readFile(join(home, 'identities', `${name}.json`), 'utf8').catch(() => undefined)
  let kind: unknown
  try {
    kind = file === undefined ? undefined : (JSON.parse(file) as { kind?: unknown }).kind
  } catch {
    kind = undefined // IdentityStore.load reports the malformed file
  }
  if (kind === 'tpm') {
    const { TpmIdentityStore } = await import('../vault/tpm-identity.ts')
    const { vault, identity } = await new TpmIdentityStore(home).open(name)
    return { identity, close: () => vault.close() }
  }
  return { identity: await new IdentityStore(home).load(name), close: async () => {} }
}

/** Every transport the CLI speaks: TCP, WebSocket, serial (serialport is loaded only when a port is opened). */
function addTransports(node: Node): { tcp: TcpTransport; ws: WebSocketTransport; serial: SerialTransport } {
  const tcp = new TcpTransport(node)
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
