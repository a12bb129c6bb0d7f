#!/usr/bin/env node
/**
 * Runs one benchmark: `npm run bench -- NAME [ARGS...]` runs `bench/NAME.ts` with the TypeScript
 * loader (`--import @tapjs/typescript/import`, transpile only), inheriting stdio, and exits with
 * its exit code. Without a NAME, or with an unknown one, it lists the benches and exits 2.
 *
 * Benches spawn the compiled CLI (`bin/throughline.js` → `dist/`), so dist/ is rebuilt first
 * (`tsc -p tsconfig.build.json`) when `dist/cli/main.js` is missing or older than any file in src/.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { constants } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const benchDir = join(root, 'bench')

function listBenches() {
  if (!existsSync(benchDir)) return []
  return readdirSync(benchDir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => e.name.slice(0, -3))
    .sort()
}

/** Newest modification time (ms) of any file under `dir`. */
function newestMtime(dir) {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p))
    else if (e.isFile()) newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

function ensureBuilt() {
  const main = join(root, 'dist', 'cli', 'main.js')
  const built = existsSync(main) ? statSync(main).mtimeMs : 0
  if (built >= newestMtime(join(root, 'src'))) return
  process.stderr.write(`bench: dist/ is ${built === 0 ? 'missing' : 'older than src/'}; building (tsc -p tsconfig.build.json)\n`)
  let cmd = 'npx'
  let args = ['tsc', '-p', 'tsconfig.build.json']
  try {
    // the project's own compiler, without npx's start-up and warnings
    const tsc = join(dirname(createRequire(join(root, 'package.json')).resolve('typescript/package.json')), 'bin', 'tsc')
    cmd = process.execPath
    args = [tsc, '-p', 'tsconfig.build.json']
  } catch {
    /* fall back to npx */
  }
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] })
  const after = existsSync(main) ? statSync(main).mtimeMs : 0
  if (r.status !== 0) {
    // tsc still emits on type errors (e.g. in a module being written elsewhere); go on if it did
    if (after > built) process.stderr.write(`bench: tsc reported errors (exit ${r.status}); dist/ was emitted anyway, going on\n`)
    else {
      process.stderr.write(`bench: building dist/ failed (exit ${r.status ?? r.signal})\n`)
      process.exit(1)
    }
  }
}

const [name, ...rest] = process.argv.slice(2)
const benches = listBenches()
if (name === undefined || !benches.includes(name)) {
  if (name !== undefined) process.stderr.write(`bench: unknown bench "${name}"\n`)
  process.stderr.write(`usage: npm run bench -- NAME [ARGS...]\navailable benches:\n${benches.map((b) => `  ${b}`).join('\n')}\n`)
  process.exit(2)
}

ensureBuilt()

const child = spawn(process.execPath, ['--import', '@tapjs/typescript/import', join('bench', `${name}.ts`), ...rest], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
})
const forward = (sig) => {
  if (child.exitCode === null && child.signalCode === null) child.kill(sig)
}
process.on('SIGINT', () => forward('SIGINT'))
process.on('SIGTERM', () => forward('SIGTERM'))
child.on('error', (err) => {
  process.stderr.write(`bench: cannot start ${name}: ${err.message}\n`)
  process.exit(1)
})
child.on('exit', (code, signal) => {
  process.exit(code ?? 128 + (constants.signals[signal] ?? 0))
})
