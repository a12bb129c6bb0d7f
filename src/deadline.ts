/**
 * Bounding an async operation by a deadline, with an optional outer AbortSignal.
 *
 * @module
 */
import { tlError, type ThroughlineError } from './errors.ts'

/**
 * Runs `run` with a signal that is aborted at the deadline (`ms`) or when `outer` aborts. Rejects
 * with `onTimeout()` at the deadline, with ERR_ABORTED when `outer` aborts, else settles as `run`.
 */
export async function withDeadline<T>(ms: number, onTimeout: () => ThroughlineError, run: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal): Promise<T> {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  let onOuter: (() => void) | undefined
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort()
      reject(onTimeout())
    }, ms)
    onOuter = () => {
      controller.abort(outer?.reason)
      reject(tlError('ERR_ABORTED', 'the operation was aborted'))
    }
    if (outer?.aborted === true) onOuter()
    else outer?.addEventListener('abort', onOuter, { once: true })
  })
  try {
    return await Promise.race([run(controller.signal), stop])
  } finally {
    clearTimeout(timer)
    if (onOuter !== undefined) outer?.removeEventListener('abort', onOuter)
  }
}
