// A TCP relay for __tests__/e2e/transport.test.ts, run in the jump host's namespace: it listens on 127.0.0.1 (its
// port on the first line of stdout) and relays one connection to argv[2]:argv[3]. On SIGUSR1 it
// ends its side towards the jump host (a FIN, as a rebooting target's killed sshd sends) and keeps
// everything else open, so the jump host sees EOF but its channel stays half-open.
'use strict'
const net = require('net')
const [host, port] = [process.argv[2], Number(process.argv[3])]
let accepted
const server = net.createServer({ allowHalfOpen: true }, socket => {
  accepted = socket
  const upstream = net.connect({ host, port, allowHalfOpen: true })
  socket.on('data', d => upstream.write(d))
  // After the FIN, what the target says is dropped: nothing more reaches the jump host.
  upstream.on('data', d => socket.writable && !socket.writableEnded && socket.write(d))
  for (const s of [socket, upstream]) s.on('error', () => undefined)
})
process.on('SIGUSR1', () => accepted && accepted.end())
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
