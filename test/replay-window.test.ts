import t from 'tap'
import fc from 'fast-check'
import { ReplayWindow } from '../src/channel/replay-window.ts'
import { NOISE_MAX_NONCE, REPLAY_WINDOW } from '../src/channel/constants.ts'
import { isThroughlineError } from '../src/errors.ts'

/** check() then, when accepted, commit(): what a receiver does after a successful decrypt. */
function accept(w: ReplayWindow, counter: bigint): boolean {
  const ok = w.check(counter)
  if (ok) w.commit(counter)
  return ok
}

t.test('numbered edge-case table (width 1024), in the style of the kernel/wireguard-go tables', async (t) => {
  const W = 1024n
  const M = NOISE_MAX_NONCE
  const w = new ReplayWindow({ width: 1024 })
  const table: [bigint, boolean][] = [
    /* 1 */ [0n, true],
    /* 2 */ [1n, true],
    /* 3 */ [1n, false], // replay
    /* 4 */ [9n, true],
    /* 5 */ [8n, true], // out of order, below the top
    /* 6 */ [7n, true],
    /* 7 */ [7n, false],
    /* 8 */ [W, true], // window is now (0, 1024]
    /* 9 */ [0n, false], // seen, and exactly `width` below the top
    /* 10 */ [2n, true], // oldest still inside
    /* 11 */ [1n, false],
    /* 12 */ [W + 1n, true], // window (1, 1025]
    /* 13 */ [3n, true],
    /* 14 */ [1n, false], // fell out of the window
    /* 15 */ [2n * W, true], // advance by one window width
    /* 16 */ [W + 1n, false], // in the window and seen
    /* 17 */ [W + 2n, true],
    /* 18 */ [W, false], // exactly width below the top: out
    /* 19 */ [2n * W + 63n, true], // above the top again, same block
    /* 20 */ [10n * W + 5n, true], // far jump: the whole ring is cleared
    /* 21 */ [2n * W, false], // old
    /* 22 */ [10n * W + 5n - (W - 1n), true], // lowest counter in the window
    /* 23 */ [10n * W + 5n - W, false], // just outside
    /* 24 */ [10n * W + 4n, true],
    /* 25 */ [10n * W + 5n, false], // the top itself, replayed
    /* 26 */ [10n * W + 64n, true], // block edges
    /* 27 */ [10n * W + 63n, true],
    /* 28 */ [10n * W + 128n, true],
    /* 29 */ [10n * W + 127n, true],
    /* 30 */ [10n * W + 64n, false],
    /* 31 */ [M - 1n, true], // the highest acceptable counter (2^64-2)
    /* 32 */ [M, false], // 2^64-1: the reject limit (reserved nonce)
    /* 33 */ [M - 1n, false],
    /* 34 */ [M - 2n, true],
    /* 35 */ [M - W, true], // oldest in the window at the very top
    /* 36 */ [M - W - 1n, false],
    /* 37 */ [-1n, false], // not a counter
    /* 38 */ [M + 1n, false],
    /* 39 */ [10n * W + 5n, false], // long gone
  ]
  table.forEach(([counter, expected], i) => {
    const before = w.check(counter)
    t.equal(w.check(counter), before, `${i + 1}: check() does not mutate`)
    t.equal(accept(w, counter), expected, `${i + 1}: counter ${counter} → ${expected ? 'accept' : 'reject'}`)
  })
})

t.test('commit refuses what check refuses, with ERR_REPLAY', async (t) => {
  const w = new ReplayWindow({ width: 64 })
  w.commit(5n)
  t.throws(() => w.commit(5n), { code: 'ERR_REPLAY' })
  w.commit(200n)
  t.throws(() => w.commit(100n), { code: 'ERR_REPLAY' }, 'too old')
  t.throws(() => w.commit(NOISE_MAX_NONCE), { code: 'ERR_REPLAY' }, 'limit')
  t.equal(w.highest, 200n)
  w.reset()
  t.equal(w.highest, -1n)
  t.ok(w.check(5n), 'reset forgets')
})

t.test('defaults and options', async (t) => {
  const w = new ReplayWindow()
  t.equal(w.width, REPLAY_WINDOW)
  t.ok(REPLAY_WINDOW >= 1024)
  accept(w, BigInt(REPLAY_WINDOW) * 3n)
  t.ok(w.check(BigInt(REPLAY_WINDOW) * 2n + 1n), 'the whole width is tracked')
  t.notOk(w.check(BigInt(REPLAY_WINDOW) * 2n))
  const small = new ReplayWindow({ width: 1, rejectAfter: 10n })
  t.ok(accept(small, 3n))
  t.notOk(accept(small, 2n), 'width 1 keeps only the top')
  t.notOk(accept(small, 10n), 'custom reject limit')
  t.ok(accept(small, 9n))
  for (const bad of [{ width: 0 }, { width: 1.5 }, { rejectAfter: 0n }, { rejectAfter: NOISE_MAX_NONCE + 1n }]) {
    t.throws(() => new ReplayWindow(bad), { code: 'ERR_INVALID_ARGUMENT' })
  }
})

t.test('every counter of a window, in reverse order, then all replays refused', async (t) => {
  const w = new ReplayWindow({ width: 256 })
  const top = 10_000n
  let accepted = 0
  for (let c = top; c > top - 256n; c--) if (accept(w, c)) accepted++
  t.equal(accepted, 256, 'the top and the 255 below it')
  t.notOk(w.check(top - 256n), 'one more is outside')
  let replays = 0
  for (let c = top; c > top - 300n; c--) if (accept(w, c)) replays++
  t.equal(replays, 0)
})

/** A naive model: a Set of seen counters and the highest. */
class Model {
  seen = new Set<bigint>()
  max = -1n
  readonly width: bigint
  readonly limit: bigint
  constructor(width: bigint, limit: bigint) {
    this.width = width
    this.limit = limit
  }
  check(c: bigint): boolean {
    if (c < 0n || c >= this.limit || this.seen.has(c)) return false
    return c > this.max || this.max - c < this.width
  }
  commit(c: bigint): void {
    this.seen.add(c)
    if (c > this.max) this.max = c
  }
}

t.test('property: agrees with a naive Set-based model', async (t) => {
  const step = fc.oneof(
    fc.record({ kind: fc.constant('near' as const), n: fc.integer({ min: -70, max: 70 }) }),
    fc.record({ kind: fc.constant('window' as const), n: fc.integer({ min: -1100, max: 10 }) }),
    fc.record({ kind: fc.constant('jump' as const), n: fc.integer({ min: 0, max: 5000 }) }),
    fc.record({ kind: fc.constant('abs' as const), n: fc.integer({ min: 0, max: 300 }) }),
    fc.record({ kind: fc.constant('forceCommit' as const), n: fc.integer({ min: -70, max: 70 }) }),
  )
  const limits = fc.constantFrom(NOISE_MAX_NONCE, 4000n, 70n)
  await fc.assert(
    fc.property(fc.constantFrom(1, 2, 63, 64, 65, 100, 1024), limits, fc.array(step, { maxLength: 300 }), (width, limit, steps) => {
      const w = new ReplayWindow({ width, rejectAfter: limit })
      const m = new Model(BigInt(width), limit)
      for (const { kind, n } of steps) {
        const base = m.max < 0n ? 0n : m.max
        const c = kind === 'abs' ? BigInt(n) : base + BigInt(n)
        const expected = m.check(c)
        if (w.check(c) !== expected) return false
        if (kind === 'forceCommit' && !expected) {
          let threw = false
          try {
            w.commit(c)
          } catch (err) {
            threw = isThroughlineError(err, 'ERR_REPLAY')
          }
          if (!threw) return false
        } else if (expected) {
          w.commit(c)
          m.commit(c)
        }
        if (w.highest !== m.max) return false
      }
      return true
    }),
    { numRuns: Number(process.env.FC_RUNS ?? 200) },
  )
  t.pass('model agrees')
})
