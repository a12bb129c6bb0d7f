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
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { type ErrorCode, isThroughlineError, ThroughlineError, tlError } from '../errors.ts'
import { type Logger, lineLogger, silentLogger } from '../router/logger.ts'
import { Node } from '../router/node.ts'
import { parseRoute, printRoute } from '../router/route.ts'
import { startEcho } from '../services/echo.ts'
import { FORWARDER_PREFIX, RELAY_ADDRESS, RelayClient, RelayService } from '../services/relay.ts'
import { TcpTransport } from '../transports/tcp.ts'

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
  throughline node start [--tcp HOST:PORT]... [--relay-at ROUTE --relay-name NAME] [--name NAME]
                         [--allow NAME]... [--log-level debug|info|warn|error|silent]
      Runs a node in the foreground with the echo and relay services.
      Prints "listening tcp HOST:PORT" per listener and "relay registered NAME" after each
      successful relay registration. Stops on SIGINT/SIGTERM.
  throughline send --to ROUTE [--timeout MS] MESSAGE
      Sends MESSAGE (UTF-8) along ROUTE and prints the reply.
      ROUTE example: /tcp/127.0.0.1:4000/service/forward_to_d/service/echo
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
    'relay-at': { type: 'string' },
    'relay-name': { type: 'string' },
    name: { type: 'string' },
    allow: { type: 'string', multiple: true },
    'log-level': { type: 'string' },
  })
  if (positionals.length > 0) throw usageError(`unexpected argument "${positionals[0]}"`)
  const relayAt = values['relay-at'] as string | undefined
  const relayName = values['relay-name'] as string | undefined
  if ((relayAt === undefined) !== (relayName === undefined)) throw usageError('--relay-at and --relay-name go together')
  const relayRoute = relayAt === undefined ? undefined : parseRoute(relayAt)
  const level = logLevel(values['log-level'] as string | undefined)
  const name = (values.name as string | undefined) ?? 'node'
  const logger = makeLogger(io, level, `throughline:${name}`)
  const node = await new Node({ name, logger }).start()
  const tcp = new TcpTransport(node)
  node.addTransport(tcp)
  startEcho(node)
  new RelayService(node)
  // what network input may reach on this node: its services, plus any --allow
  const allow = ['echo', RELAY_ADDRESS, `${FORWARDER_PREFIX}*`, ...((values.allow as string[] | undefined) ?? [])]
  const listeners: string[] = []
  try {
    for (const hp of (values.tcp as string[] | undefined) ?? []) {
      const l = await tcp.listen(hp, { allow, transit: true })
      listeners.push(l.address)
      io.stdout(`listening tcp ${l.address}`)
    }
  } catch (err) {
    await node.stop()
    throw err
  }
  let client: RelayClient | undefined
  if (relayRoute !== undefined && relayName !== undefined) {
    client = new RelayClient(node, { relayRoute, name: relayName, allow })
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
  logger.info('stopped', { drops: node.dropCount() })
  return EXIT.OK
}

async function send(args: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, { to: { type: 'string' }, timeout: { type: 'string' }, 'log-level': { type: 'string' } })
  const to = values.to as string | undefined
  if (to === undefined) throw usageError('send needs --to ROUTE')
  if (positionals.length !== 1) throw usageError('send needs exactly one MESSAGE argument (quote it if it has spaces)')
  const timeoutText = (values.timeout as string | undefined) ?? '10000'
  const timeout = Number(timeoutText)
  if (!Number.isInteger(timeout) || timeout <= 0) throw usageError(`--timeout must be a positive number of milliseconds (got "${timeoutText}")`)
  const route = parseRoute(to)
  const level = logLevel((values['log-level'] as string | undefined) ?? 'silent')
  const node = await new Node({ name: 'send', logger: makeLogger(io, level, 'throughline:send') }).start()
  node.addTransport(new TcpTransport(node))
  try {
    const reply = await node.request(route, Buffer.from(positionals[0]!, 'utf8'), { timeout, ...(io.signal ? { signal: io.signal } : {}) })
    io.stdout(Buffer.from(reply.payload).toString('utf8'))
    return EXIT.OK
  } catch (err) {
    if (isThroughlineError(err)) {
      const hint: Partial<Record<ErrorCode, string>> = {
        ERR_TIMEOUT: `no reply within ${timeout} ms from ${printRoute(route)} (is every hop up, and does the last address exist there?)`,
        ERR_CONNECTION_REFUSED: `cannot reach the first hop of ${printRoute(route)}`,
      }
      throw new ThroughlineError(err.code, hint[err.code] ? `${hint[err.code]}: ${err.message.replace(/^ERR_[A-Z_]+: /, '')}` : err.message.replace(/^ERR_[A-Z_]+: /, ''), { cause: err })
    }
    throw err
  } finally {
    await node.stop()
  }
}
