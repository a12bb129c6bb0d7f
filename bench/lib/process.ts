// Child-process pieces the benches share: stopping a child by its own PID, and starting the
// relay node (the real CLI) and reading the address it listens on.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'

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
export async function spawnRelayCli(root: string, nodeArgs: readonly string[], onSpawn: (proc: ChildProcess) => void): Promise<{ proc: ChildProcess; address: string }> {
  const proc = spawn(process.execPath, [...nodeArgs, join(root, 'bin', 'throughline.js'), 'node', 'start', '--tcp', '127.0.0.1:0', '--name', 'relay', '--log-level', 'warn'], {
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
