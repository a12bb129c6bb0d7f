// Runs the built `throughline` command (bin/throughline.js → dist/) as child processes.
// Every process is stopped by its own PID in the test's teardown.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

export const BIN = fileURLToPath(new URL('../../bin/throughline.js', import.meta.url))

export interface RunningCli {
  proc: ChildProcess
  stdout: string[]
  stderr: string[]
  /** Resolves with the first stdout line matching `re` at or after line `from`. */
  waitFor(re: RegExp, ms?: number, from?: number): Promise<RegExpMatchArray>
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

function lines(stream: NodeJS.ReadableStream, into: string[], onLine: () => void): void {
  let buf = ''
  stream.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      into.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
      onLine()
    }
  })
}

export function startCli(t: Test, args: string[]): RunningCli {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const stdout: string[] = []
  const stderr: string[] = []
  const waiters = new Set<() => void>()
  const poke = (): void => { for (const w of [...waiters]) w() }
  lines(proc.stdout!, stdout, poke)
  lines(proc.stderr!, stderr, poke)
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => { resolve(code); poke() }))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  return {
    proc,
    stdout,
    stderr,
    exited,
    waitFor(re, ms = 10_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          for (let i = from; i < stdout.length; i++) {
            const m = stdout[i]!.match(re)
            if (m) { done(); resolve(m); return }
          }
          if (proc.exitCode !== null) { done(); reject(new Error(`process exited (${proc.exitCode}) before ${re}; stderr: ${stderr.join(' | ')}`)) }
        }
        const timer = setTimeout(() => { done(); reject(new Error(`no line matching ${re} within ${ms} ms; stdout: ${stdout.join(' | ')}; stderr: ${stderr.join(' | ')}`)) }, ms)
        const done = (): void => { clearTimeout(timer); waiters.delete(check) }
        waiters.add(check)
        check()
      })
    },
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null) proc.kill(signal)
      return exited
    },
  }
}

/** Runs the command to completion. */
export async function runCli(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>((resolve) => proc.on('exit', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}
