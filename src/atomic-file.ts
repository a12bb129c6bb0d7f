/**
 * Atomic small-file writes: a temp file beside the target (mode 0600 by default), fsync, then
 * rename over the target (replace) or link to it (create only if absent). A crash leaves the old
 * file or the new one, never a torn one.
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { link, open, rename, unlink } from 'node:fs/promises'

/** Writes `data` to a new temp file beside `path` and fsyncs it; returns its name (removed again on failure). */
async function writeTemp(path: string, data: string | Uint8Array, mode: number): Promise<string> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fh = await open(tmp, 'wx', mode)
  try {
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  return tmp
}

/** Writes `data` to `path` atomically (temp file, fsync, rename). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = await writeTemp(path, data, mode)
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
}

/**
 * Writes `data` to `path` only if nothing is there: temp file, fsync, link() — which fails with
 * the Node error code EEXIST when the name is taken, without a window for a race.
 */
export async function writeFileExclusive(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = await writeTemp(path, data, mode)
  try {
    await link(tmp, path)
  } finally {
    await unlink(tmp).catch(() => {})
  }
}
