// A private swtpm for tests: a child process on unix sockets in a fresh temp dir (or, with
// `{ tcp: true }`, on two free loopback TCP ports) — see shared notes tpm.md §2.2, §9. Stopped by
// its own PID (control-channel CMD_SHUTDOWN, then SIGKILL to that PID after 2 s), never by name;
// the temp dir (state included) is removed by stop().
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

export interface Swtpm {
  /** `unix:<dir>/tpm.sock` (or `tcp:127.0.0.1:PORT`), for TpmClient.open. */
  readonly endpoint: string
  /** The temp dir (sockets, log, state/). */
  readonly dir: string
  /** The TPM state dir (kept across restart()). */
  readonly stateDir: string
  /** The PID of the running swtpm, or undefined when stopped. */
  readonly pid: number | undefined
  /** Stops swtpm and keeps the state, then starts it again on the same state (a power cycle). */
  restart(): Promise<void>
  /** Stops swtpm and removes the temp dir with the state. Idempotent. */
  stop(): Promise<void>
  /**
   * Sends a control-channel command (`u32 cmd ‖ payload`) and resolves with the u32 result, e.g.
   * `control(2, new Uint8Array(4))` = CMD_INIT: a power cycle (the TPM then wants TPM2_Startup).
   */
  control(cmd: number, payload?: Uint8Array): Promise<number>
}

type CtrlTarget = { path: string } | { host: string; port: number }

let available: boolean | undefined

/**
 * True when the `swtpm` binary runs — and always under CI (CI=true): there the test command
 * installs swtpm, so TPM tests must run (and fail if it is missing), never skip.
 */
export function swtpmAvailable(): boolean {
  if (process.env['CI'] !== undefined && process.env['CI'] !== '' && process.env['CI'] !== 'false') return true
  available ??= spawnSync('swtpm', ['--version'], { stdio: 'ignore' }).status === 0
  return available
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** A free loopback TCP port (bound, then released: racy in theory, fine for tests). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
}

function canConnect(target: CtrlTarget): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(target)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Sends one control-channel command (u32 cmd ‖ payload) and resolves with the u32 result. */
function ctrlCommand(target: CtrlTarget, cmd: number, payload: Uint8Array = new Uint8Array(0), timeoutMs = 1000): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect(target)
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`swtpm control command ${cmd} timed out`))
    }, timeoutMs)
    let buf = Buffer.alloc(0)
    s.on('connect', () => {
      const b = Buffer.alloc(4 + payload.length)
      b.writeUInt32BE(cmd)
      b.set(payload, 4)
      s.write(b)
    })
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      if (buf.length >= 4) {
        clearTimeout(timer)
        s.destroy()
        resolve(buf.readUInt32BE(0))
      }
    })
    s.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** Starts a private swtpm; with `t`, it is stopped (and its dir removed) in t's teardown. */
export async function startSwtpm(t?: Test, options: { tcp?: boolean } = {}): Promise<Swtpm> {
  const dir = await mkdtemp(join(tmpdir(), 'tl-swtpm-'))
  const stateDir = join(dir, 'state')
  await mkdir(stateDir)
  const sock = join(dir, 'tpm.sock')
  const ctrl = join(dir, 'tpm.sock.ctrl')
  const log = join(dir, 'swtpm.log')
  const tcp = options.tcp === true ? { data: await freePort(), ctrl: await freePort() } : undefined
  const ctrlTarget: CtrlTarget = tcp === undefined ? { path: ctrl } : { host: '127.0.0.1', port: tcp.ctrl }
  const dataTarget: CtrlTarget = tcp === undefined ? { path: sock } : { host: '127.0.0.1', port: tcp.data }
  // A unix socket file exists from bind(), before listen(): connecting in between is refused, so
  // ready means both endpoints accept a connection (the probes send nothing).
  const ready = async (): Promise<boolean> => (tcp !== undefined || (existsSync(sock) && existsSync(ctrl))) && (await canConnect(ctrlTarget)) && (await canConnect(dataTarget))
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  let removed = false

  const launch = async (): Promise<void> => {
    await rm(sock, { force: true })
    await rm(ctrl, { force: true })
    const proc = spawn(
      'swtpm',
      [
        'socket', '--tpm2',
        '--tpmstate', `dir=${stateDir}`,
        '--server', tcp === undefined ? `type=unixio,path=${sock}` : `type=tcp,port=${tcp.data},bindaddr=127.0.0.1`,
        '--ctrl', tcp === undefined ? `type=unixio,path=${ctrl}` : `type=tcp,port=${tcp.ctrl},bindaddr=127.0.0.1`,
        '--flags', 'not-need-init,startup-clear',
        '--log', `file=${log},level=1`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let stderr = ''
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    child = proc
    exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve))
    const deadline = Date.now() + 5000
    for (;;) {
      if (await ready()) return
      if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL')
        const logText = await readFile(log, 'utf8').catch(() => '')
        throw new Error(`swtpm did not start (exit ${proc.exitCode}): ${stderr}${logText}`)
      }
      const err = await Promise.race([spawnError, sleep(2).then(() => undefined)])
      if (err !== undefined) throw err
    }
  }

  const halt = async (): Promise<void> => {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
    try {
      await ctrlCommand(ctrlTarget, 3 /* CMD_SHUTDOWN */)
    } catch {
      proc.kill('SIGTERM') // our own child, by its PID
    }
    let timer: NodeJS.Timeout | undefined
    const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 2000)))])
    clearTimeout(timer)
    if (!done) {
      proc.kill('SIGKILL')
      await exited
    }
  }

  await launch()
  const swtpm: Swtpm = {
    endpoint: tcp === undefined ? `unix:${sock}` : `tcp:127.0.0.1:${tcp.data}`,
    dir,
    stateDir,
    get pid() {
      return child?.pid
    },
    async restart() {
      await halt()
      await launch()
    },
    control(cmd: number, payload?: Uint8Array) {
      return ctrlCommand(ctrlTarget, cmd, payload)
    },
    async stop() {
      await halt()
      if (!removed) {
        removed = true
        await rm(dir, { recursive: true, force: true })
      }
    },
  }
  t?.teardown(() => swtpm.stop())
  return swtpm
}
