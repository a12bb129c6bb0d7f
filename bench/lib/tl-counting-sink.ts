/**
 * The part every throughline sink process of the benches shares: a `sink` worker that counts
 * messages and payload bytes, and the IPC protocol of a bench child — answers `{ type: 'mark' }`
 * with `{ type: 'mark', msgs, bytes, t, drops }` (t in ms, this process's monotonic clock) and
 * stops (once) on `{ type: 'stop' }`, on disconnect and on SIGTERM (a clean exit, so that
 * --cpu-prof writes its profile).
 */
import type { Node } from '../../src/router/index.ts'

/** Sends a message to the bench over IPC. */
export const send = (m: object): void => void process.send?.(m)

/** Starts the counting `sink` worker on `node` and serves marks; `beforeStop` runs first on stop. */
export function serveCountingSink(node: Node, beforeStop: () => void = () => {}): void {
  let msgs = 0
  let bytes = 0
  node.startWorker('sink', {
    handleMessage(_ctx, msg) {
      msgs++
      bytes += msg.payload.length
    },
  })
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    beforeStop()
    await node.stop()
    process.exit(0)
  }
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'mark') send({ type: 'mark', msgs, bytes, t: performance.now(), drops: node.dropCount() })
    else if (m?.type === 'stop') void stop()
  })
  process.on('disconnect', () => void stop())
  process.on('SIGTERM', () => void stop())
}
