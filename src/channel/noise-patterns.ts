/**
 * Noise handshake patterns as data (rev 34 §7.4 one-way, §7.5 interactive), written in the
 * spec's own notation and parsed once, plus the `pskN` modifiers of §9.
 *
 * @module
 */
import { ThroughlineError } from '../errors.ts'

/** A token of a handshake message (§7.1) or `psk` (§9). */
export type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss' | 'psk'

/** The fundamental patterns this engine knows. */
export type BasePatternName =
  | 'N' | 'K' | 'X'
  | 'NN' | 'NK' | 'NX' | 'KN' | 'KK' | 'KX' | 'XN' | 'XK' | 'XX' | 'IN' | 'IK' | 'IX'

/** A pattern name: a fundamental pattern, optionally with psk modifiers (`XXpsk3`, `NNpsk0+psk2`). */
export type PatternName = BasePatternName | `${BasePatternName}psk${string}`

/**
 * The patterns in spec notation: pre-messages, then `...`, then the messages. `->` is sent by
 * the initiator, `<-` by the responder.
 */
const PATTERNS: Record<BasePatternName, readonly string[]> = {
  // §7.4 one-way patterns
  N: ['<- s', '...', '-> e, es'],
  K: ['-> s', '<- s', '...', '-> e, es, ss'],
  X: ['<- s', '...', '-> e, es, s, ss'],
  // §7.5 interactive patterns
  NN: ['-> e', '<- e, ee'],
  NK: ['<- s', '...', '-> e, es', '<- e, ee'],
  NX: ['-> e', '<- e, ee, s, es'],
  KN: ['-> s', '...', '-> e', '<- e, ee, se'],
  KK: ['-> s', '<- s', '...', '-> e, es, ss', '<- e, ee, se'],
  KX: ['-> s', '...', '-> e', '<- e, ee, se, s, es'],
  XN: ['-> e', '<- e, ee', '-> s, se'],
  XK: ['<- s', '...', '-> e, es', '<- e, ee', '-> s, se'],
  XX: ['-> e', '<- e, ee, s, es', '-> s, se'],
  IN: ['-> e, s', '<- e, ee, se'],
  IK: ['<- s', '...', '-> e, es, s, ss', '<- e, ee, se'],
  IX: ['-> e, s', '<- e, ee, se, s, es'],
}

/** A parsed pattern. */
export interface HandshakePattern {
  /** The full name, e.g. `XXpsk3`. */
  readonly name: string
  /** Pre-message tokens (only `s` is supported) of the initiator and of the responder. */
  readonly preInitiator: readonly Token[]
  readonly preResponder: readonly Token[]
  /** Message token lists; message i is sent by the initiator when i is even. */
  readonly messages: readonly (readonly Token[])[]
  /** One-way pattern (§7.4): a single message, initiator to responder. */
  readonly oneWay: boolean
  /** Number of `psk` tokens; when > 0, `e` tokens also MixKey (§9.2). */
  readonly pskCount: number
  /** Whether the initiator's / the responder's static key pair is used. */
  readonly initiatorStatic: boolean
  readonly responderStatic: boolean
}

function parseLine(line: string): Token[] {
  return line.slice(3).split(',').map((t) => t.trim() as Token)
}

function fail(name: string, why: string): never {
  throw new ThroughlineError('ERR_INVALID_ARGUMENT', `unsupported Noise pattern ${JSON.stringify(name)}: ${why}`)
}

/**
 * Parse a pattern name such as `XX`, `IK` or `XXpsk3` (psk modifiers per §9.1: psk0 puts a psk
 * token at the start of the first message, pskN at the end of message N).
 * Throws ERR_INVALID_ARGUMENT for an unknown name.
 */
export function parsePattern(name: string): HandshakePattern {
  let pattern = parsed.get(name)
  if (pattern === undefined) {
    pattern = parse(name)
    parsed.set(name, pattern)
  }
  return pattern
}

/** Parsed patterns by name (a handful at most: only names that parsed are kept). */
const parsed = new Map<string, HandshakePattern>()

function parse(name: string): HandshakePattern {
  const m = /^([NKXI]{1,2})((?:psk\d+)(?:\+psk\d+)*)?$/.exec(name)
  const lines = m ? PATTERNS[m[1] as BasePatternName] : undefined
  if (!m || !lines) return fail(name, 'unknown pattern')
  const dots = lines.indexOf('...')
  const pre = dots < 0 ? [] : lines.slice(0, dots)
  const preInitiator = pre.filter((l) => l.startsWith('->')).flatMap(parseLine)
  const preResponder = pre.filter((l) => l.startsWith('<-')).flatMap(parseLine)
  const messages = lines.slice(dots + 1).map(parseLine)
  let pskCount = 0
  for (const modifier of m[2]?.split('+') ?? []) {
    const n = Number(modifier.slice(3))
    const target = messages[n === 0 ? 0 : n - 1]
    if (target === undefined) fail(name, `${modifier} names a message the pattern does not have`)
    if (n === 0) target.unshift('psk')
    else target.push('psk')
    pskCount++
  }
  // A party's static key pair is needed when it is in its pre-message or sent with an s token.
  const sends = (first: 0 | 1) => messages.filter((_, i) => i % 2 === first).flat()
  return Object.freeze({
    name,
    preInitiator: Object.freeze(preInitiator),
    preResponder: Object.freeze(preResponder),
    messages: Object.freeze(messages.map((tokens) => Object.freeze(tokens))),
    oneWay: m[1]!.length === 1,
    pskCount,
    initiatorStatic: preInitiator.includes('s') || sends(0).includes('s'),
    responderStatic: preResponder.includes('s') || sends(1).includes('s'),
  })
}
