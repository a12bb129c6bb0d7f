// Waiting in tests: a sleep, and polling a condition with a deadline (the error names what was awaited).

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` every `pollMs` until it holds; throws after `ms` naming `what`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition', pollMs = 5): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(pollMs)
  }
}
