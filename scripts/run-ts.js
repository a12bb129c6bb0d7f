#!/usr/bin/env node
// Runs a TypeScript file (an example or a benchmark) with the TypeScript loader that tap ships,
// transpile-only: `node scripts/run-ts.js examples/02-relay-two-hops.ts [args...]`.
import { spawn } from 'node:child_process'

const [file, ...args] = process.argv.slice(2)
if (file === undefined) {
  process.stderr.write('usage: node scripts/run-ts.js FILE.ts [ARGS...]\n')
  process.exit(2)
}
const child = spawn(process.execPath, ['--import', '@tapjs/typescript/import', '--no-warnings', file, ...args], {
  stdio: 'inherit',
  env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
})
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig))
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
