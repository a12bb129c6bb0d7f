/**
 * TPM identities on disk (the CLI's `identity create NAME --vault tpm --tpm ENDPOINT`): the
 * identity key is a non-exportable P-256 key in a {@link TpmVault} kept in `HOME/vaults/NAME/`, and
 * `HOME/identities/NAME.json` — the same file name as a software identity, so the two kinds share
 * one namespace and a name is taken once — records that it is a TPM identity:
 *
 * ```json
 * { "version": 1, "name": "dev", "kind": "tpm", "alg": "p256", "identifier": "I…",
 *   "publicKey": "<base64, 65-byte point>",
 *   "vault": { "dir": "vaults/dev", "endpoint": "unix:/run/swtpm.sock", "handle": "p256-…" } }
 * ```
 *
 * `vault.dir` is relative to HOME, so a HOME can move. The file holds no secret (mode 0600 all the
 * same) and is created atomically and only if absent (temp file, fsync, link). This is a separate
 * store rather than an extension of the channel's `IdentityStore`, so the channel layer does not
 * depend on the TPM vault; `IdentityStore.load` refuses such a file (ERR_IDENTITY_INVALID: it is not
 * an Ed25519 identity), and {@link TpmIdentityStore.open} loads it.
 *
 * @module
 */
import { access, mkdir, readFile } from 'node:fs/promises'
import { writeFileExclusive } from '../atomic-file.ts'
import { join, resolve } from 'node:path'
import { tlError, isThroughlineError } from '../errors.ts'
import { defaultHome, identifierOf } from '../channel/identity.ts'
import { TpmVault } from './tpm-vault.ts'
import { vaultIdentity, type VaultIdentity } from './identity.ts'
import { parseTpmEndpoint, type TpmClientOptions } from './tpm/index.ts'

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

/** The identity file of a TPM identity. */
export interface TpmIdentityRecord {
  version: 1
  name: string
  kind: 'tpm'
  alg: 'p256'
  identifier: string
  /** The 65-byte uncompressed point, base64. */
  publicKey: string
  vault: { dir: string; endpoint: string; handle: string }
}

/** TPM identities in `HOME/identities` with their vaults in `HOME/vaults`. */
export class TpmIdentityStore {
  readonly home: string
  /** Where identity files live (shared with the software IdentityStore). */
  readonly dir: string

  constructor(home = defaultHome()) {
    this.home = home
    this.dir = join(home, 'identities')
  }

  #path(name: string): string {
    if (!NAME_RE.test(name)) throw tlError('ERR_IDENTITY_INVALID', `identity name "${name}" must be 1-64 characters of [A-Za-z0-9_.-]`)
    return join(this.dir, `${name}.json`)
  }

  /** The vault directory of identity `name`: `HOME/vaults/NAME`. */
  vaultDir(name: string): string {
    this.#path(name)
    return join(this.home, 'vaults', name)
  }

  /**
   * Creates identity `name`: a P-256 key in the TPM at `endpoint`, in the TPM vault
   * `HOME/vaults/NAME` (opened, or created), and the identity file. ERR_IDENTITY_EXISTS when the
   * name is taken (by either kind of identity).
   */
  async create(name: string, endpoint: string, options: { client?: TpmClientOptions } = {}): Promise<{ identifier: string; publicKey: Uint8Array; record: TpmIdentityRecord }> {
    const path = this.#path(name)
    parseTpmEndpoint(endpoint) // ERR_INVALID_ARGUMENT before anything is created
    const exists = await access(path).then(
      () => true,
      () => false,
    )
    if (exists) throw tlError('ERR_IDENTITY_EXISTS', `identity "${name}" exists already (${path})`)
    await mkdir(join(this.home, 'vaults'), { recursive: true, mode: 0o700 })
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    const vault = await TpmVault.open({ endpoint, dir: this.vaultDir(name), ...(options.client === undefined ? {} : { client: options.client }) })
    try {
      const handle = await vault.generateSigningKey('p256')
      const id = await vaultIdentity(vault, handle)
      const record: TpmIdentityRecord = {
        version: 1,
        name,
        kind: 'tpm',
        alg: 'p256',
        identifier: id.identifier,
        publicKey: Buffer.from(id.publicKey).toString('base64'),
        vault: { dir: join('vaults', name), endpoint, handle },
      }
      try {
        await writeFileExclusive(path, JSON.stringify(record, null, 2) + '\n')
      } catch (err) {
        await vault.deleteKey(handle).catch(() => {})
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw tlError('ERR_IDENTITY_EXISTS', `identity "${name}" exists already (${path})`)
        throw err
      }
      return { identifier: id.identifier, publicKey: id.publicKey, record }
    } finally {
      await vault.close()
    }
  }

  /**
   * The record of identity `name` if it is a TPM identity; undefined when there is no such file or
   * it is a software identity. ERR_IDENTITY_INVALID when a TPM identity file is malformed.
   */
  async read(name: string): Promise<TpmIdentityRecord | undefined> {
    const path = this.#path(name)
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw tlError('ERR_IDENTITY_INVALID', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
    }
    let body: Partial<TpmIdentityRecord> & { kind?: unknown }
    try {
      body = JSON.parse(text) as typeof body
    } catch (err) {
      throw tlError('ERR_IDENTITY_INVALID', `${path} is not valid JSON`, { cause: err })
    }
    if (body === null || typeof body !== 'object' || body.kind !== 'tpm') return undefined
    const v = body.vault
    if (
      body.version !== 1 ||
      body.alg !== 'p256' ||
      typeof body.publicKey !== 'string' ||
      typeof body.identifier !== 'string' ||
      v === null ||
      typeof v !== 'object' ||
      typeof v.dir !== 'string' ||
      typeof v.endpoint !== 'string' ||
      typeof v.handle !== 'string'
    ) {
      throw tlError('ERR_IDENTITY_INVALID', `${path} is not a throughline TPM identity file of version 1`)
    }
    const point = Buffer.from(body.publicKey, 'base64')
    if (point.length !== 65 || identifierOf('p256', point) !== body.identifier) {
      throw tlError('ERR_IDENTITY_INVALID', `${path}: the stored identifier does not match the public key`)
    }
    return body as TpmIdentityRecord
  }

  /**
   * Opens the vault of TPM identity `name` (on its recorded endpoint, or `endpoint`) and returns it
   * with the identity; the caller closes the vault. Checks the key in the vault is the recorded one.
   */
  async open(name: string, options: { endpoint?: string; client?: TpmClientOptions } = {}): Promise<{ vault: TpmVault; identity: VaultIdentity; record: TpmIdentityRecord }> {
    const record = await this.read(name)
    if (record === undefined) {
      const path = this.#path(name)
      const exists = await access(path).then(
        () => true,
        () => false,
      )
      throw exists
        ? tlError('ERR_IDENTITY_INVALID', `identity "${name}" is not a TPM identity (${path})`)
        : tlError('ERR_IDENTITY_NOT_FOUND', `no identity "${name}" (looked for ${path})`)
    }
    const vault = await TpmVault.open({
      endpoint: options.endpoint ?? record.vault.endpoint,
      dir: resolve(this.home, record.vault.dir),
      create: false,
      ...(options.client === undefined ? {} : { client: options.client }),
    })
    try {
      const identity = await vaultIdentity(vault, record.vault.handle)
      if (identity.identifier !== record.identifier) throw tlError('ERR_IDENTITY_INVALID', `identity "${name}": the key in the vault is not the recorded one`)
      return { vault, identity, record }
    } catch (err) {
      await vault.close().catch(() => {})
      if (isThroughlineError(err, 'ERR_VAULT_KEY_NOT_FOUND')) throw tlError('ERR_IDENTITY_INVALID', `identity "${name}": its key ${record.vault.handle} is not in the vault`, { cause: err })
      throw err
    }
  }
}
