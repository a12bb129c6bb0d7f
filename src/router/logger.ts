/**
 * Logging through an injected logger. The default writes through `node:util` debuglog, so it is
 * off unless `NODE_DEBUG=throughline*` (or a narrower namespace) is set.
 *
 * @module
 */
import { debuglog } from 'node:util'

/** Structured fields of a log line. Never put key material here. */
export type LogFields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  /** A logger for a sub-component: `throughline:router` → `throughline:router:tcp`. */
  child(namespace: string): Logger
}

function render(level: string, msg: string, fields?: LogFields): string {
  if (fields === undefined) return `${level} ${msg}`
  const parts: string[] = []
  for (const [k, v] of Object.entries(fields)) {
    const s = v instanceof Error ? v.message : typeof v === 'string' ? v : JSON.stringify(v)
    parts.push(`${k}=${s}`)
  }
  return `${level} ${msg} ${parts.join(' ')}`
}

/** The default logger: namespaced `node:util` debuglog sections (`NODE_DEBUG=throughline*`). */
export function debugLogger(namespace = 'throughline'): Logger {
  const log = debuglog(namespace.replaceAll(':', '_'))
  const on = (): boolean => log.enabled
  return {
    debug: (m, f) => on() && log(render('debug', m, f)),
    info: (m, f) => on() && log(render('info', m, f)),
    warn: (m, f) => on() && log(render('warn', m, f)),
    error: (m, f) => on() && log(render('error', m, f)),
    child: (ns) => debugLogger(`${namespace}:${ns}`),
  } as Logger
}

/** A logger that writes every line to a function (the CLI passes stderr; tests collect lines). */
export function lineLogger(write: (line: string) => void, namespace = 'throughline', minLevel: 'debug' | 'info' | 'warn' | 'error' = 'info'): Logger {
  const order = { debug: 0, info: 1, warn: 2, error: 3 }
  const emit = (level: keyof typeof order, m: string, f?: LogFields): void => {
    if (order[level] >= order[minLevel]) write(`[${namespace}] ${render(level, m, f)}`)
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (ns) => lineLogger(write, `${namespace}:${ns}`, minLevel),
  }
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
}
