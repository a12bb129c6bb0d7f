/**
 * Raw baseline proxy hop (plain node:net, no throughline code): for every accepted connection it
 * dials the target and, in both directions, parses each `u32be length | payload` frame and writes
 * it on as its own write (a zero-copy view of the chunk; a frame straddling chunks is written as
 * its pieces once it is complete), with `cork()` / `uncork()` per received chunk (perf.md §6).
 * Backpressure: the reading side is paused while the writing side needs 'drain'.
 *
 *   node bench/lib/raw-proxy.js TARGET_PORT      (started by bench/relay.ts with an IPC channel)
 *
 * IPC: sends `{ type: 'ready', port }`; answers `{ type: 'mark' }` with `{ type: 'mark', msgs, bytes, t }`
 * (frames and payload bytes forwarded toward the target); exits on `{ type: 'stop' }`.
 */
import net from 'node:net'

const targetPort = Number(process.argv[2])
let msgs = 0
let bytes = 0

function forwardFrames(src, dst, count) {
  const lenBuf = Buffer.alloc(4)
  let lenFill = 0
  let need = -1 // -1: reading a length
  let parts = [] // pieces of a frame that straddles chunks, its length prefix first
  let partBytes = 0
  src.on('data', (chunk) => {
    dst.cork()
    const n = chunk.length
    let off = 0
    while (off < n) {
      if (need < 0) {
        const start = off
        if (lenFill === 0 && n - off >= 4) {
          need = chunk.readUInt32BE(off)
          off += 4
          if (n - off >= need) {
            // the whole frame is in this chunk: one write of a view
            dst.write(chunk.subarray(start, off + need))
            if (count) {
              msgs++
              bytes += need
            }
            off += need
            need = -1
            continue
          }
          parts.push(chunk.subarray(start, off))
        } else {
          while (lenFill < 4 && off < n) lenBuf[lenFill++] = chunk[off++]
          if (lenFill < 4) break
          need = lenBuf.readUInt32BE(0)
          lenFill = 0
          parts.push(Buffer.from(lenBuf))
        }
        partBytes = 0
        if (need === 0) {
          dst.write(parts[0])
          parts = []
          need = -1
          if (count) msgs++
        }
        continue
      }
      const take = Math.min(need - partBytes, n - off)
      parts.push(chunk.subarray(off, off + take))
      partBytes += take
      off += take
      if (partBytes === need) {
        for (const p of parts) dst.write(p)
        if (count) {
          msgs++
          bytes += need
        }
        parts = []
        partBytes = 0
        need = -1
      }
    }
    dst.uncork()
    if (dst.writableNeedDrain && !src.isPaused()) {
      src.pause()
      dst.once('drain', () => src.resume())
    }
  })
}

const server = net.createServer({ noDelay: true }, (inbound) => {
  inbound.pause()
  const outbound = net.connect({ host: '127.0.0.1', port: targetPort, noDelay: true })
  outbound.on('connect', () => {
    forwardFrames(inbound, outbound, true)
    forwardFrames(outbound, inbound, false)
    inbound.resume()
  })
  const close = () => {
    inbound.destroy()
    outbound.destroy()
  }
  inbound.on('error', close).on('close', close)
  outbound.on('error', close).on('close', close)
})
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  process.send({ type: 'ready', port: server.address().port })
})
process.on('message', (m) => {
  if (m?.type === 'mark') process.send({ type: 'mark', msgs, bytes, t: performance.now() })
  else if (m?.type === 'stop') process.exit(0)
})
process.on('disconnect', () => process.exit(0))
