// The attestation CLI as real processes over TCP on 127.0.0.1 (the built bin/throughline.js):
// sim platforms kept in a home, a local verifier in `send` and in a listener, a verifier service
// whose reference values an admin sets over a secure channel (background check), and passports.
// Every process is stopped by its own PID (helpers/cli.ts); homes are per-test temp dirs.
import t from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SimRoot, verifyDeviceCert } from '../src/attest/index.ts'
import { main } from '../src/cli/main.ts'
import { runCli, startCli } from './helpers/cli.ts'
import { startSwtpm, swtpmAvailable } from './helpers/swtpm.ts'

const ATTESTATION_LINE = /^attestation (I[0-9a-f]{40}): status=(\w+) suite=(\w+) verifier=(\S+) expires=(\S+) trust-vector=(\S+)$/m

async function identity(home: string, name: string): Promise<string> {
  const r = await runCli(['identity', 'create', name, '--home', home])
  if (r.code !== 0) throw new Error(`identity create ${name}: ${r.stderr}`)
  return r.stdout.trim()
}

t.test('SimRoot: saved as PKCS#8 PEM and loaded back, the same root', async (t) => {
  for (const alg of ['ed25519', 'p256'] as const) {
    const root = SimRoot.generate('r', { alg })
    const pem = root.toPem()
    t.match(pem, /^-----BEGIN PRIVATE KEY-----\n/, `${alg}: PKCS#8 PEM`)
    const back = SimRoot.fromPrivateKey('r', createPrivateKey(pem))
    t.equal(back.alg, alg)
    t.equal(back.keyId, root.keyId, `${alg}: same key id`)
    const now = Date.now()
    const cert = back.issueDeviceCert({ akPub: p256Spki(), subject: 'd', notBefore: now - 1000, notAfter: now + 60_000 })
    t.equal(verifyDeviceCert(cert, [root.publicKeySpki], now).subject, 'd', `${alg}: what the loaded root issues verifies under the saved root's public key`)
  }
  t.throws(() => SimRoot.fromPrivateKey('r', generateKeyPairSync('x25519').privateKey), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => SimRoot.fromPrivateKey('r', generateKeyPairSync('ed25519').publicKey), { code: 'ERR_INVALID_ARGUMENT' })
})

function p256Spki(): Uint8Array {
  return new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }))
}

t.test('cli: sim device, a local verifier in send and in a listener; usage errors', async (t) => {
  const dir = t.testdir({ dev: {}, gw: {} })
  const dev = join(dir, 'dev')
  const gw = join(dir, 'gw')
  const devId = await identity(dev, 'dev')
  await identity(gw, 'gw')

  const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'sim', '--home', dev])
  const [, rootPub] = await D.waitFor(/^attest sim root (.+)$/)
  t.equal(rootPub, join(dev, 'attest', 'sim-root.pub.pem'))
  t.match(await readFile(rootPub!, 'utf8'), /^-----BEGIN PUBLIC KEY-----/)
  const [, dAddr] = await D.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)

  const pcrs = await runCli(['attest', 'pcrs', '--attest', 'sim', '--home', dev])
  t.equal(pcrs.code, 0)
  const set = JSON.parse(pcrs.stdout) as { name: string; pcrs: Record<string, string> }
  t.same(Object.keys(set.pcrs), ['0', '1', '4', '7', '10'], 'one JSON line: the quoted PCRs')
  t.equal((await runCli(['attest', 'pcrs', '--attest', 'sim', '--home', dev])).stdout, pcrs.stdout, 'the same values on every run (the platform is kept in the home)')
  const rv = join(dir, 'rv.json')
  await writeFile(rv, pcrs.stdout)

  const to = `/tcp/${dAddr}/secure/secure/service/echo`
  const appraise = ['--require-attestation', 'sim', '--trust-sim-root', rootPub!, '--reference-values', rv]
  const ok = await runCli(['send', ...appraise, '--trust-sim', '--show-attestation', '--to', to, 'hello'])
  t.equal(ok.stdout, 'hello\n')
  t.equal(ok.code, 0)
  const line = ok.stderr.match(ATTESTATION_LINE)
  t.ok(line, `an attestation line on stderr (${ok.stderr})`)
  t.equal(line?.[1], devId, 'about the device')
  t.equal(line?.[2], 'affirming')
  t.equal(line?.[3], 'sim')
  t.equal(line?.[4], 'local')
  t.ok(Date.parse(line![5]!) > Date.now(), 'expires in the future')
  t.equal(line?.[6], 'instance-identity:2,configuration:2,executables:2,file-system:0,hardware:2,runtime-opaque:0,storage-opaque:0,sourced-data:0')

  const post = await runCli(['send', ...appraise, '--trust-sim', '--attest-mode', 'post-handshake', '--to', to, 'post'])
  t.equal(post.stdout, 'post\n', 'post-handshake mode')

  const noTrustSim = await runCli(['send', ...appraise, '--show-attestation', '--to', to, 'x'])
  t.equal(noTrustSim.code, 1, 'sim is never affirming without --trust-sim')
  t.match(noTrustSim.stderr, /^error: ERR_ATTEST_POLICY_DENY: .*warning.*sim/)
  t.equal(noTrustSim.stderr.trim().split('\n').length, 1, 'one line')
  t.equal(noTrustSim.stdout, '')

  // a gateway whose listener requires sim of its peers; the device sends with --attest sim
  const G = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'gw', '--secure-listener', '--home', gw, ...appraise, '--trust-sim'])
  const [, gAddr] = await G.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const attested = await runCli(['send', '--attest', 'sim', '--identity', 'dev', '--home', dev, '--to', `/tcp/${gAddr}/secure/secure/service/echo`, 'from the device'])
  t.equal(attested.stdout, 'from the device\n', 'the listener accepts the attested device')
  const plain = await runCli(['send', '--to', `/tcp/${gAddr}/secure/secure/service/echo`, 'x'])
  t.equal(plain.code, 1)
  t.match(plain.stderr, /^error: ERR_ATTEST_NO_MATCH: /, 'and refuses a peer that offers no attestation')

  // a device that shows no evidence to unauthenticated peers: the evidence comes in a round after the handshake
  const P = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'sim', '--early-evidence', 'never', '--home', dev])
  const [, pAddr] = await P.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const deferred = await runCli(['send', ...appraise, '--trust-sim', '--show-attestation', '--to', `/tcp/${pAddr}/secure/secure/service/echo`, 'deferred'])
  t.equal(deferred.stdout, 'deferred\n', `evidence after the handshake (${deferred.stderr.trim()})`)
  t.equal(deferred.stderr.match(ATTESTATION_LINE)?.[2], 'affirming')
  t.equal(await P.stop('SIGINT'), 0)

  const usage: [string[], RegExp][] = [
    [['node', 'start', '--identity', 'dev', '--secure-listener', '--attest', 'sim', '--early-evidence', 'later', '--home', dev], /--early-evidence takes always or never/],
    [['node', 'start', '--early-evidence', 'never'], /--early-evidence needs --attest/],
    [['send', '--require-attestation', 'sim', '--to', to, 'x'], /--require-attestation sim needs an appraiser/],
    [['send', '--require-attestation', 'passport', '--trust-sim-root', rootPub!, '--to', to, 'x'], /passport needs --verifier ROUTE/],
    [['send', '--require-attestation', 'sim', '--verifier', '/tcp/127.0.0.1:1/secure/secure/service/verifier', '--trust-sim', '--to', to, 'x'], /exclude each other/],
    [['send', '--trust-sim-root', rootPub!, '--to', to, 'x'], /--trust-sim-root needs --require-attestation/],
    [['send', '--show-attestation', '--to', to, 'x'], /--show-attestation needs --require-attestation/],
    [['send', ...appraise, '--attest-mode', 'later', '--to', to, 'x'], /--attest-mode must be handshake or post-handshake/],
    [['send', '--require-attestation', 'sim', '--verifier', '/tcp/127.0.0.1:1/service/verifier', '--to', to, 'x'], /must open a secure channel/],
    [['node', 'start', '--identity', 'dev', '--secure-listener', '--attest', 'tpm2', '--home', dev], /--attest tpm2 needs --tpm/],
    [['node', 'start', '--attest', 'sim'], /--attest needs --identity NAME --secure-listener/],
    [['node', 'start', '--identity', 'dev', '--secure-listener', '--passport-from', '/tcp/127.0.0.1:1/secure/secure-attested/service/verifier', '--home', dev], /--passport-from needs --attest/],
    [['attest', 'pcrs', '--attest', 'tee'], /--attest must be sim or tpm2/],
    [['verifier', 'start', '--identity', 'dev', '--home', dev], /needs a trust anchor/],
    [['verifier', 'reference-values', 'set', '--to', '/tcp/127.0.0.1:1/secure/secure/service/verifier', 'golden', '0=00'], /needs --identity NAME/],
  ]
  // usage errors come before anything starts: checked in-process (main() of the same CLI)
  for (const [args, re] of usage) {
    const err: string[] = []
    const code = await main(args, { stdout: () => {}, stderr: (l) => err.push(l) })
    t.match(err[0], new RegExp(`^error: ERR_CLI_USAGE: .*${re.source}`), args.join(' '))
    t.equal(code, 2, 'exit 2')
  }
  t.equal(await G.stop('SIGINT'), 0)
  t.equal(await D.stop('SIGINT'), 0)
})

t.test('cli: verifier service: admin-managed reference values, background check, passports', async (t) => {
  const dir = t.testdir({ dev: {}, ver: {}, adm: {} })
  const [dev, ver, adm] = ['dev', 'ver', 'adm'].map((d) => join(dir, d)) as [string, string, string]
  await identity(dev, 'dev')
  const verId = await identity(ver, 'ver')
  const adminId = await identity(adm, 'admin')
  await identity(adm, 'other')
  const pcrs = await runCli(['attest', 'pcrs', '--attest', 'sim', '--home', dev, '--name', 'golden'])
  const rv = join(dir, 'rv.json')
  await writeFile(rv, pcrs.stdout)
  const rootPub = join(dev, 'attest', 'sim-root.pub.pem')

  const V = startCli(t, ['verifier', 'start', '--tcp', '127.0.0.1:0', '--identity', 'ver', '--home', ver, '--admin', adminId, '--trust-sim-root', rootPub, '--trust-sim'])
  const [, kid] = await V.waitFor(/^verifier key ([0-9a-f]{32})$/)
  await V.waitFor(new RegExp(`^secure listener ${verId}$`))
  const [, vAddr] = await V.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  t.match(await readFile(join(ver, 'verifier.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/, `the result-signing key ${kid} is kept in the home`)
  const vRoute = `/tcp/${vAddr}/secure/secure/service/verifier`

  const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'sim', '--home', dev, '--passport-from', `/tcp/${vAddr}/secure/secure-attested/service/verifier`])
  const [, dAddr] = await D.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const to = `/tcp/${dAddr}/secure/secure/service/echo`
  const admin = (...args: string[]) => runCli(['verifier', 'reference-values', ...args, '--to', vRoute, '--identity', 'admin', '--home', adm])

  const set = await admin('set', '--file', rv)
  t.equal(set.stdout, 'reference values set golden\n')
  t.equal(set.code, 0)

  const background = ['--require-attestation', 'sim', '--verifier', vRoute, '--verifier-id', verId, '--show-attestation', '--to', to]
  const ok = await runCli(['send', ...background, 'checked'])
  t.equal(ok.stdout, 'checked\n', 'background check through the verifier service')
  t.equal(ok.code, 0)
  t.match(ok.stderr, ATTESTATION_LINE)
  t.equal(ok.stderr.match(ATTESTATION_LINE)?.[2], 'affirming')
  t.equal(ok.stderr.match(ATTESTATION_LINE)?.[4], verId, 'the result came from the verifier service')

  const wrongPin = await runCli(['send', ...background.map((a) => (a === verId ? `I${'0'.repeat(40)}` : a)), 'x'])
  t.equal(wrongPin.code, 1)
  t.match(wrongPin.stderr, /^error: ERR_TRUST_POLICY: the verifier service at /, '--verifier-id pins the verifier')

  const denied = await runCli(['verifier', 'reference-values', 'set', '--to', vRoute, '--identity', 'other', '--home', adm, 'evil', `0=${'ab'.repeat(32)}`])
  t.equal(denied.code, 1)
  t.match(denied.stderr, /^error: ERR_VERIFIER_DENIED: .*is not an admin/)
  const list = await admin('list')
  t.same(list.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { name: string }).name), ['golden'], 'the non-admin changed nothing')

  const removed = await admin('remove', 'golden')
  t.equal(removed.stdout, 'reference values removed golden\n')
  const refused = await runCli(['send', ...background, 'x'])
  t.equal(refused.code, 1, 'without reference values the device is not affirming')
  t.match(refused.stderr, /^error: ERR_ATTEST_POLICY_DENY: .*warning.*reference.value/)
  t.equal(refused.stdout, '')

  // passports: the device attests itself to the verifier's secure-attested listener and presents the result
  const golden = JSON.parse(pcrs.stdout) as { pcrs: Record<string, string> }
  const again = await admin('set', 'golden-2', ...Object.entries(golden.pcrs).map(([p, v]) => `${p}=${v}`))
  t.equal(again.stdout, 'reference values set golden-2\n')
  const passport = await runCli(['send', '--require-attestation', 'passport', '--verifier', vRoute, '--show-attestation', '--to', to, 'with a passport'])
  t.equal(passport.stdout, 'with a passport\n')
  t.equal(passport.code, 0, passport.stderr)
  const p = passport.stderr.match(ATTESTATION_LINE)
  t.equal(p?.[2], 'affirming')
  t.equal(p?.[4], verId, 'issued by the verifier service')

  // the appraisal policy, set by an admin: a minimum svn above the device's (1) makes it a warning
  const policyCmd = (...args: string[]) => runCli(['verifier', 'policy', ...args, '--to', vRoute, '--identity', 'admin', '--home', adm])
  const shown = await policyCmd('show')
  t.equal(shown.code, 0, shown.stderr)
  t.match(JSON.parse(shown.stdout) as object, { trustSim: true })
  const raised = await policyCmd('set', '--min-svn', '2', '--debug', 'contraindicated')
  t.equal(raised.code, 0, raised.stderr)
  t.match(JSON.parse(raised.stdout) as object, { minSvn: 2, debug: 'contraindicated', trustSim: true }, 'set prints the new policy; other fields kept')
  const low = await runCli(['send', ...background, 'x'])
  t.equal(low.code, 1)
  t.match(low.stderr, /^error: ERR_ATTEST_POLICY_DENY: .*svn/, 'svn 1 below the minimum 2: refused')
  const notAdmin = await runCli(['verifier', 'policy', 'set', '--min-svn', '0', '--to', vRoute, '--identity', 'other', '--home', adm])
  t.match(notAdmin.stderr, /^error: ERR_VERIFIER_DENIED: /)
  const badFlag = await policyCmd('set', '--debug', 'maybe')
  t.equal(badFlag.code, 2)
  t.match(badFlag.stderr, /--debug takes warning or contraindicated/)

  t.equal(await D.stop('SIGINT'), 0)
  t.equal(await V.stop('SIGINT'), 0)

  // reference values and the policy set by admins survive a restart of the verifier (kept in its home)
  const V2 = startCli(t, ['verifier', 'start', '--tcp', '127.0.0.1:0', '--identity', 'ver', '--home', ver, '--admin', adminId, '--trust-sim-root', rootPub, '--trust-sim'])
  const [, v2Addr] = await V2.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const kept = await runCli(['verifier', 'reference-values', 'list', '--to', `/tcp/${v2Addr}/secure/secure/service/verifier`, '--identity', 'admin', '--home', adm])
  t.same(kept.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { name: string }).name), ['golden-2'], 'after a restart the verifier still has what the admin set')
  const keptPolicy = await runCli(['verifier', 'policy', 'show', '--to', `/tcp/${v2Addr}/secure/secure/service/verifier`, '--identity', 'admin', '--home', adm])
  t.match(JSON.parse(keptPolicy.stdout) as object, { minSvn: 2, debug: 'contraindicated' }, 'and the policy')
  t.equal(await V2.stop('SIGINT'), 0)
})

const noSwtpm = swtpmAvailable() ? false : 'swtpm is not installed'

t.test('cli: tpm2 on swtpm (protocol correctness only: swtpm has no manufacturer EK): AK and log kept in the home, re-measured after a TPM restart', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const dir = t.testdir({ dev: {} })
  const dev = join(dir, 'dev')
  await identity(dev, 'dev')
  const pcrs = await runCli(['attest', 'pcrs', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev])
  t.equal(pcrs.code, 0, pcrs.stderr)
  const sim = await runCli(['attest', 'pcrs', '--attest', 'sim', '--home', dev])
  t.same((JSON.parse(pcrs.stdout) as { pcrs: unknown }).pcrs, (JSON.parse(sim.stdout) as { pcrs: unknown }).pcrs, 'the CLI measures the sim boot: one reference-value set for both suites')
  const rv = join(dir, 'rv.json')
  await writeFile(rv, pcrs.stdout)
  const start = async (): Promise<{ addr: string; stop: () => Promise<number | null> }> => {
    const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev])
    const [, ak] = await D.waitFor(/^attest tpm2 ak (.+)$/)
    t.equal(ak, join(dev, 'attest', 'tpm2-ak.pub.pem'))
    const [, addr] = await D.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
    return { addr: addr!, stop: () => D.stop('SIGINT') }
  }
  const send = (addr: string) =>
    runCli(['send', '--require-attestation', 'tpm2', '--trust-tpm-ak', join(dev, 'attest', 'tpm2-ak.pub.pem'), '--reference-values', rv, '--show-attestation', '--to', `/tcp/${addr}/secure/secure/service/echo`, 'quoted'])
  const first = await start()
  const r1 = await send(first.addr)
  t.equal(r1.stdout, 'quoted\n', r1.stderr)
  t.match(r1.stderr, /status=affirming suite=tpm2 /)
  t.equal(await first.stop(), 0)
  const akFile = await readFile(join(dev, 'attest', 'tpm2.json'), 'utf8')

  await swtpm.restart() // PCRs reset: the node measures the boot again; the AK stays
  const second = await start()
  const r2 = await send(second.addr)
  t.equal(r2.stdout, 'quoted\n', r2.stderr)
  t.equal(await readFile(join(dev, 'attest', 'tpm2.json'), 'utf8'), akFile, 'the same AK (the pinned key still verifies)')
  t.equal(await second.stop(), 0)
})

t.test('cli: tpm2 AK enrolled at a verifier service (--enrol-tpm --tofu-ek, --enrol-at): affirming with no pinned AK, also after a verifier restart', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const dir = t.testdir({ dev: {}, ver: {} })
  const dev = join(dir, 'dev')
  const ver = join(dir, 'ver')
  await identity(dev, 'dev')
  await identity(ver, 'ver')
  const pcrs = await runCli(['attest', 'pcrs', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev])
  t.equal(pcrs.code, 0, pcrs.stderr)
  const rv = join(dir, 'rv.json')
  await writeFile(rv, pcrs.stdout)
  const ek = await runCli(['attest', 'ek', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev])
  t.equal(ek.code, 0, ek.stderr)
  t.match(ek.stdout, /^[0-9a-f]{100,}\n$/, 'the EK TPM2B_PUBLIC as one hex line')
  const noTofu = await runCli(['verifier', 'start', '--identity', 'ver', '--home', ver, '--tofu-ek', '--reference-values', rv])
  t.equal(noTofu.code, 2, '--tofu-ek without --enrol-tpm is a usage error')

  const startVerifier = async (extra: string[]) => {
    const V = startCli(t, ['verifier', 'start', '--tcp', '127.0.0.1:0', '--identity', 'ver', '--home', ver, '--reference-values', rv, ...extra])
    const [, addr] = await V.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
    return { V, route: `/tcp/${addr}/secure/secure/service/verifier` }
  }
  const v1 = await startVerifier(['--enrol-tpm', '--tofu-ek'])
  const D = startCli(t, ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev, '--enrol-at', v1.route])
  const [, dAddr] = await D.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/, 20_000)
  const [, kid] = await D.waitFor(/^attest tpm2 enrolled (\S+)$/, 20_000)
  await v1.V.waitFor(new RegExp(`^verifier enrolled ${kid}$`))
  const send = (vRoute: string) =>
    runCli(['send', '--require-attestation', 'tpm2', '--verifier', vRoute, '--show-attestation', '--to', `/tcp/${dAddr}/secure/secure/service/echo`, 'enrolled'])
  const r1 = await send(v1.route)
  t.equal(r1.stdout, 'enrolled\n', r1.stderr)
  t.match(r1.stderr, /status=affirming suite=tpm2 /, 'affirming: the AK was enrolled, not pinned')
  const stored = JSON.parse(await readFile(join(ver, 'verifier-aks.json'), 'utf8')) as { kid: string }[]
  t.same(stored.map((a) => a.kid), [kid], 'kept in the verifier home')
  t.equal(await v1.V.stop('SIGINT'), 0)

  // restarted without --enrol-tpm: the stored AK is a trust anchor again
  const v2 = await startVerifier([])
  const r2 = await send(v2.route)
  t.equal(r2.stdout, 'enrolled\n', r2.stderr)
  t.match(r2.stderr, /status=affirming suite=tpm2 /, 'still trusted after a restart')
  t.equal(await v2.V.stop('SIGINT'), 0)
  t.equal(await D.stop('SIGINT'), 0)
})

t.test('cli: verifier ek allow (admin) and enrolment refused for an EK not allowed', { skip: noSwtpm }, async (t) => {
  const swtpm = await startSwtpm(t)
  const dir = t.testdir({ dev: {}, ver: {}, adm: {} })
  const dev = join(dir, 'dev')
  const ver = join(dir, 'ver')
  const adm = join(dir, 'adm')
  await identity(dev, 'dev')
  await identity(ver, 'ver')
  const adminId = await identity(adm, 'admin')
  const ekFile = join(dir, 'ek.bin')
  const ek = await runCli(['attest', 'ek', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev, '--out', ekFile])
  t.equal(ek.stdout, `attest ek ${ekFile}\n`, ek.stderr)
  const V = startCli(t, ['verifier', 'start', '--tcp', '127.0.0.1:0', '--identity', 'ver', '--home', ver, '--admin', adminId, '--enrol-tpm'])
  const [, addr] = await V.waitFor(/^listening tcp (127\.0\.0\.1:\d+)$/)
  const vRoute = `/tcp/${addr}/secure/secure/service/verifier`
  const nodeArgs = ['node', 'start', '--tcp', '127.0.0.1:0', '--identity', 'dev', '--secure-listener', '--attest', 'tpm2', '--tpm', swtpm.endpoint, '--home', dev, '--enrol-at', vRoute]
  const refused = startCli(t, nodeArgs)
  t.equal(await refused.exited, 1, 'the node stops: its EK is not allowed')
  t.match(refused.stderr.join('\n'), /ERR_ATTEST_ENROL_FAILED/)
  const allow = await runCli(['verifier', 'ek', 'allow', '--to', vRoute, '--identity', 'admin', '--home', adm, ekFile])
  t.equal(allow.stdout, 'ek allowed\n', allow.stderr)
  const list = await runCli(['verifier', 'ek', 'list', '--to', vRoute, '--identity', 'admin', '--home', adm])
  t.match(list.stdout, /^04[0-9a-f]{128}\n$/)
  const D = startCli(t, nodeArgs)
  await D.waitFor(/^attest tpm2 enrolled \S+$/, 20_000)
  t.equal(await D.stop('SIGINT'), 0)
  t.equal(await V.stop('SIGINT'), 0)
})
