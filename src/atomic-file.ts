/**
 * Atomic small-file writes: a temp file beside the target (mode 0600 by default), fsync, rename
 * over the target. A crash leaves the old file or the new one, never a torn one.
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { open, rename, unlink } from 'node:fs/promises'

/** Writes `data` to `path` atomically (temp file, fsync, rename). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fh = await open(tmp, 'wx', mode)
  try {
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
}
