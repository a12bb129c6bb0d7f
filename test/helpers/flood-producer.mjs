// A TCP producer that writes COUNT throughline frames of SIZE bytes to 0#TARGET as fast as the
// socket takes them (it honours 'drain', as any TCP producer must). Prints "sent N" when all are
// written, and "blocked N" each time the socket made it wait. Stopped by its parent's kill(pid).
import net from 'node:net'
import { pack } from 'msgpackr'

const [port, count, size, target] = process.argv.slice(2)
const header = pack({ o: [`0#${target}`], r: [] })
const total = Number(count)
const sock = net.connect({ host: '127.0.0.1', port: Number(port) }, () => {
  sock.write(Buffer.from([1]))
  let i = 0
  let blocked = 0
  const pump = () => {
    while (i < total) {
      const payload = Buffer.alloc(Number(size))
      payload.writeUInt32BE(i, 0)
      const head = Buffer.alloc(4 + 2 + header.length)
      head.writeUInt32BE(2 + header.length + payload.length, 0)
      head[4] = 1
      head[5] = header.length
      header.copy(head, 6)
      sock.write(head)
      const ok = sock.write(payload)
      i++
      if (!ok) {
        blocked++
        sock.once('drain', pump)
        return
      }
    }
    process.stdout.write(`sent ${i} blocked ${blocked}\n`)
  }
  pump()
})
sock.on('data', () => {})
sock.on('error', (e) => {
  process.stderr.write(`producer error ${e.message}\n`)
  process.exit(1)
})
