/**
 * The echo service: replies to every message with its payload, along its return route.
 *
 * @module
 */
import type { Node, WorkerContext, WorkerOptions } from '../router/node.ts'

/** Default address of the echo service. */
export const ECHO_ADDRESS = 'echo'

/** Starts the echo service at `name` (default `echo`). */
export function startEcho(node: Node, name = ECHO_ADDRESS, options: WorkerOptions = {}): WorkerContext {
  return node.startWorker(
    name,
    {
      handleMessage(ctx, msg) {
        if (msg.return.length > 0) ctx.reply(msg, msg.payload)
      },
    },
    { layer: 'service', ...options },
  )
}
