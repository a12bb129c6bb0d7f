#!/usr/bin/env node
// `npm run example -- NAME` runs examples/NAME.ts (a prefix such as 01 is enough).
import { readdirSync } from 'node:fs'
import { spawn } from 'node:child_process'

const name = process.argv[2]
const all = readdirSync(new URL('../examples/', import.meta.url)).filter((f) => f.endsWith('.ts')).sort()
const match = name === undefined ? [] : all.filter((f) => f.startsWith(name))
if (match.length !== 1) {
  process.stderr.write(`usage: npm run example -- NAME\nexamples:\n${all.map((f) => `  ${f.replace(/\.ts$/, '')}`).join('\n')}\n`)
  process.exit(2)
}
const child = spawn(process.execPath, [new URL('./run-ts.js', import.meta.url).pathname, `examples/${match[0]}`], { stdio: 'inherit' })
child.on('exit', (code) => process.exit(code ?? 1))
