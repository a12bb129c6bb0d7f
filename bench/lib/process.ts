// Child-process pieces the benches share: a registry that stops every child by its own PID when
// the bench ends (also on failure or a signal), a child that answers `mark` requests, waiting for a
// child's `ready`, CPU time from /proc, stopping a child by its PID, and starting the relay node
// (the real CLI) and reading the address it listens on.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** Every child the bench started and that still runs. */
const live = new Set<ChildProcess>()
let cleanupInstalled = false

/**
 * Registers `proc` so that it is killed (SIGKILL, by its own PID) when the bench exits, also on a
 * failure; SIGINT/SIGTERM make the bench exit (130) after `log`ging that it stops its children.
 */
export function trackChild(proc: ChildProcess, log: (line: string) => void): void {
  if (!cleanupInstalled) {
    cleanupInstalled = true
    process.on('exit', () => {
      for (const c of live) if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL')
    })
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.on(sig, () => {
        log(`${sig}: stopping children`)
        process.exit(130)
      })
    }
  }
  live.add(proc)
  proc.once('exit', () => live.delete(proc))
}

/** CPU time (ms) a process has used so far, from /proc (Linux); NaN elsewhere. */
export function cpuMsOf(pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100 // utime + stime, in clock ticks of 10 ms
  } catch {
    return NaN
  }
}

/**
 * A tracked child that reports counters: `mark()` sends `{ type: 'mark' }` and resolves with its
 * answer (a message `{ type: 'mark', ...M }`). An exit the bench did not ask for is logged; with
 * `exitMark`, marks still pending then resolve with it.
 */
export class MarkedChild<M> {
  readonly name: string
  readonly proc: ChildProcess
  /** Set when the bench stops it (or expects its exit): no "exited unexpectedly" line then. */
  stopping = false
  #marks: ((m: M) => void)[] = []

  constructor(name: string, proc: ChildProcess, log: (line: string) => void, exitMark?: M) {
    this.name = name
    this.proc = proc
    trackChild(proc, log)
    proc.once('exit', (code, signal) => {
      if (!this.stopping) log(`child ${name} (pid ${proc.pid}) exited unexpectedly: ${code ?? signal}`)
      if (exitMark !== undefined) for (const f of this.#marks.splice(0)) f(exitMark)
    })
    proc.on('message', (m: { type?: string } & M) => {
      if (m?.type === 'mark') this.#marks.shift()?.(m)
    })
  }

  get pid(): number | undefined {
    return this.proc.pid
  }

  mark(): Promise<M> {
    return new Promise((resolve) => {
      this.#marks.push(resolve)
      this.proc.send({ type: 'mark' })
    })
  }

  /** Stops the process by its PID: SIGTERM, then SIGKILL after 3 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.stopping = true
    await stopByPid(this.proc)
  }
}

/**
 * Resolves with the child's first `{ type: 'ready', ... }` message; rejects when it exits first or
 * is not ready within 20 s (and then kills it by its PID).
 */
export async function waitReady<R>(proc: ChildProcess, name: string): Promise<R> {
  let timer: NodeJS.Timeout | undefined
  let onMessage: ((m: { type?: string }) => void) | undefined
  try {
    return await Promise.race([
      new Promise<R>((resolve) => {
        onMessage = (m) => {
          if (m?.type === 'ready') resolve(m as R)
        }
        proc.on('message', onMessage)
      }),
      once(proc, 'exit').then(([code]) => {
        throw new Error(`${name} exited (${String(code)}) before it was ready`)
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} was not ready within 20 s`)), 20_000)
      }),
    ])
  } catch (err) {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    throw err
  } finally {
    clearTimeout(timer)
    if (onMessage !== undefined) proc.off('message', onMessage)
  }
}

/** Stops `proc` by its PID: SIGTERM, then SIGKILL after 3 s. Resolves once it has exited. */
export async function stopByPid(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = once(proc, 'exit')
  proc.kill('SIGTERM')
  const t = setTimeout(() => proc.kill('SIGKILL'), 3000)
  await exited
  clearTimeout(t)
}

/**
 * Spawns the relay node, `node bin/throughline.js node start --tcp 127.0.0.1:0`, from the project
 * at `root` and resolves with the process (`onSpawn` sees it at once) and its `listening tcp` address.
 */
export async function spawnRelayCli(root: string, nodeArgs: readonly string[], onSpawn: (proc: ChildProcess) => void, cliArgs: readonly string[] = []): Promise<{ proc: ChildProcess; address: string }> {
  const proc = spawn(process.execPath, [...nodeArgs, join(root, 'bin', 'throughline.js'), 'node', 'start', '--tcp', '127.0.0.1:0', '--name', 'relay', '--log-level', 'warn', ...cliArgs], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  onSpawn(proc)
  const address = await new Promise<string>((resolve, reject) => {
    let buf = ''
    const t = setTimeout(() => reject(new Error('relay CLI did not print "listening tcp" within 20 s')), 20_000)
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString('utf8')
      const m = /listening tcp (\S+)/.exec(buf)
      if (m !== null) {
        clearTimeout(t)
        resolve(m[1]!)
      }
    })
    proc.once('exit', (code) => reject(new Error(`relay CLI exited (${String(code)}) before listening`)))
  })
  return { proc, address }
}
