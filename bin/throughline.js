#!/usr/bin/env node
// The throughline command: runs the compiled CLI (npm run build) with this process's streams.
import { main } from '../dist/cli/main.js'

const controller = new AbortController()
let signals = 0
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (++signals > 1) process.exit(130) // a second signal stops at once
    controller.abort()
  })
}
const code = await main(process.argv.slice(2), {
  stdout: (line) => process.stdout.write(line + '\n'),
  stderr: (line) => process.stderr.write(line + '\n'),
  signal: controller.signal,
})
process.exitCode = code
// let stdout drain, then leave even if a timer somewhere is still pending
setImmediate(() => process.exit(code))
