/**
 * Raw baseline sink (plain node:net, no throughline code): accepts connections carrying
 * `u32be length | payload` frames, parses every frame into one contiguous buffer (a view of the
 * chunk when the frame lies inside it, else its pieces gathered once — like the router's
 * FrameDecoder), and counts frames and payload bytes.
 *
 *   node bench/lib/raw-sink.js [count|echo]      (started by bench/relay.ts with an IPC channel)
 *
 * `echo` also writes every frame back unchanged (ping-pong RTT), corked per chunk.
 * IPC: sends `{ type: 'ready', port }`; answers `{ type: 'mark' }` with
 * `{ type: 'mark', msgs, bytes, t }` (t in ms, this process's monotonic clock); exits on `{ type: 'stop' }`.
 */
import net from 'node:net'

const echo = process.argv[2] === 'echo'
let msgs = 0
let bytes = 0

function attach(socket) {
  socket.setNoDelay(true)
  const lenBuf = Buffer.alloc(4)
  let lenFill = 0
  let need = -1 // -1: reading a length
  let parts = []
  let partBytes = 0
  const frame = (f) => {
    msgs++
    bytes += f.length
    if (echo) {
      const p = Buffer.allocUnsafe(4)
      p.writeUInt32BE(f.length, 0)
      socket.write(p)
      if (f.length > 0) socket.write(f)
    }
  }
  socket.on('data', (chunk) => {
    if (echo) socket.cork()
    const n = chunk.length
    let off = 0
    while (off < n) {
      if (need < 0) {
        if (lenFill === 0 && n - off >= 4) {
          need = chunk.readUInt32BE(off)
          off += 4
        } else {
          while (lenFill < 4 && off < n) lenBuf[lenFill++] = chunk[off++]
          if (lenFill < 4) break
          need = lenBuf.readUInt32BE(0)
          lenFill = 0
        }
        if (need === 0) {
          frame(chunk.subarray(0, 0))
          need = -1
        }
        continue
      }
      if (partBytes === 0 && n - off >= need) {
        frame(chunk.subarray(off, off + need))
        off += need
        need = -1
        continue
      }
      const take = Math.min(need - partBytes, n - off)
      parts.push(chunk.subarray(off, off + take))
      partBytes += take
      off += take
      if (partBytes === need) {
        frame(parts.length === 1 ? parts[0] : Buffer.concat(parts, need))
        parts = []
        partBytes = 0
        need = -1
      }
    }
    if (echo) socket.uncork()
  })
  socket.on('error', () => {})
}

const server = net.createServer({ noDelay: true }, attach)
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  process.send({ type: 'ready', port: server.address().port })
})
process.on('message', (m) => {
  if (m?.type === 'mark') process.send({ type: 'mark', msgs, bytes, t: performance.now() })
  else if (m?.type === 'stop') process.exit(0)
})
process.on('disconnect', () => process.exit(0))
