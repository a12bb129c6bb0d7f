import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ERROR_CODES, ThroughlineError, isThroughlineError } from '../src/errors.ts'

function sources(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...sources(p))
    else if (p.endsWith('.ts') && !p.endsWith('errors.ts')) out.push(readFileSync(p, 'utf8'))
  }
  return out
}

t.test('every code is documented in docs/errors.md', async (t) => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
  for (const code of Object.keys(ERROR_CODES)) t.match(doc, `\`${code}\``, `${code} documented`)
  const documented = [...doc.matchAll(/`(ERR_[A-Z0-9_]+)`/g)].map((m) => m[1])
  for (const code of documented) t.ok(code! in ERROR_CODES, `${code} in docs is in the registry`)
})

t.test('every code is used somewhere in src/', async (t) => {
  const all = sources(new URL('../src', import.meta.url).pathname).join('\n')
  for (const code of Object.keys(ERROR_CODES)) t.ok(all.includes(`'${code}'`), `${code} used`)
})

t.test('ThroughlineError carries its code', async (t) => {
  const e = new ThroughlineError('ERR_TIMEOUT', 'x', { details: { ms: 5 } })
  t.equal(e.code, 'ERR_TIMEOUT')
  t.ok(isThroughlineError(e, 'ERR_TIMEOUT'))
  t.notOk(isThroughlineError(e, 'ERR_ABORTED'))
  t.match(e.message, /^ERR_TIMEOUT: x/)
})
