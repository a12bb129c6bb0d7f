/**
 * A socat pseudo-terminal pair for the benches and the serial tests (test/helpers/pty.ts
 * re-exports it): `socat -d -d pty,raw,echo=0,link=DIR/a pty,raw,echo=0,link=DIR/b`.
 * The pair is stopped by socat's own PID. A pty ignores the baud rate.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'

export interface PtyPair {
  /** The two ends (symlinks to /dev/pts/N). */
  a: string
  b: string
  proc: ChildProcess
  stop(): Promise<void>
}

/** A socat pty pair linked at DIR/a and DIR/b. */
export async function ptyPair(dir: string): Promise<PtyPair> {
  mkdirSync(dir, { recursive: true })
  const a = join(dir, 'a')
  const b = join(dir, 'b')
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  let err = ''
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`socat did not start: ${err}`)), 5000)
      proc.stderr!.on('data', (d: Buffer) => {
        err += d.toString()
        if (err.includes('starting data transfer loop')) {
          clearTimeout(timer)
          resolve()
        }
      })
      proc.once('error', (e) => {
        clearTimeout(timer)
        reject(e)
      })
    })
  } catch (e) {
    if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) process.kill(proc.pid, 'SIGKILL')
    throw e
  }
  proc.stderr!.resume() // keep socat's stderr drained
  return {
    a,
    b,
    proc,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGTERM')
      await exited
    },
  }
}
