// A binary cache over HTTP for __tests__/e2e/shards.test.ts, run in the jump host's namespace, as an
// S3 bucket or a cache server would be: GET, HEAD and PUT of files under argv[2] (Nix uploads with
// PUT and reads with GET), on 0.0.0.0 (its port on the first line of stdout). Each request is a JSON
// line on stderr: the client's address, the method, the path and the bytes sent or received. A
// client whose address is a line of argv[3] (read at each request) gets 403: a Pi that cannot
// reach the cache. One whose line is "stall ADDRESS" gets no answer at all (a cache that hangs):
// its requests are held until it is no longer listed and asks again, or the server ends. One whose
// line is "stall-nar ADDRESS" gets its .narinfo files and no NAR (a link that drops large transfers,
// as a VPN with an MTU black hole does).
'use strict'
const fs = require('fs')
const http = require('http')
const path = require('path')
const [root, denyFile] = [process.argv[2], process.argv[3]]

const denied = () => {
  try {
    return fs.readFileSync(denyFile, 'utf8').split('\n').filter(Boolean)
  } catch {
    return []
  }
}

const server = http.createServer((req, res) => {
  const client = req.socket.remoteAddress.replace(/^::ffff:/, '')
  const rel = decodeURIComponent(new URL(req.url, 'http://cache').pathname)
  const file = path.join(root, path.normalize(rel))
  let bytes = 0
  const done = status => {
    res.statusCode = status
    res.end()
    process.stderr.write(JSON.stringify({ client, method: req.method, path: rel, status, bytes }) + '\n')
  }
  if (
    denied().includes(`stall ${client}`) ||
    (rel.startsWith('/nar/') && denied().includes(`stall-nar ${client}`))
  ) {
    process.stderr.write(JSON.stringify({ client, method: req.method, path: rel, status: 0, bytes }) + '\n')
    return
  }
  if (!file.startsWith(root + path.sep) || denied().includes(client)) return done(403)
  if (req.method === 'PUT') {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    const out = fs.createWriteStream(file + '.part')
    req.on('data', d => (bytes += d.length))
    req.pipe(out)
    out.on('finish', () => {
      fs.renameSync(file + '.part', file)
      done(200)
    })
    return
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return done(405)
  fs.readFile(file, (err, data) => {
    if (err) return done(404)
    res.setHeader('Content-Length', data.length)
    if (req.method === 'GET') {
      bytes = data.length
      res.write(data)
    }
    done(200)
  })
})
server.listen(0, '0.0.0.0', () => console.log(server.address().port))
