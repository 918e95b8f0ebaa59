/**
 * A local GitHub Actions cache service for the tests: the Twirp API that @actions/cache speaks (v2:
 * CreateCacheEntry, FinalizeCacheEntryUpload, GetCacheEntryDownloadURL) on loopback, with the blobs in
 * Azurite (the Azure Storage emulator) behind SAS URLs -- so the action's real @actions/cache code
 * uploads and downloads for real, only the service is ours.
 */
import {
  BlobSASPermissions,
  BlobServiceClient,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential
} from '@azure/storage-blob'
import { ChildProcess, spawn } from 'child_process'
import * as fs from 'fs'
import * as http from 'http'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'

const ACCOUNT = 'devstoreaccount1'
/** Azurite's well-known development account key (published in Azurite itself). */
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
const CONTAINER = 'actions-cache'

interface Entry {
  key: string
  version: string
  blob: string
  finalized: boolean
  sizeBytes?: number
  created: number
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

export class CacheService {
  readonly entries: Entry[] = []
  private azurite?: ChildProcess
  private server?: http.Server
  private blobPort = 0
  url = ''
  private dataDir = ''
  private cred = new StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY)

  async start(): Promise<void> {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nda-azurite-'))
    this.blobPort = await freePort()
    const bin = path.join(__dirname, '..', '..', 'node_modules', '.bin', 'azurite-blob')
    this.azurite = spawn(
      bin,
      [
        '--silent',
        '--skipApiVersionCheck',
        '--location',
        this.dataDir,
        '--blobHost',
        '127.0.0.1',
        '--blobPort',
        String(this.blobPort)
      ],
      { stdio: 'ignore' }
    )
    const svc = new BlobServiceClient(`http://127.0.0.1:${this.blobPort}/${ACCOUNT}`, this.cred)
    for (let i = 0; ; i++) {
      try {
        await svc.getContainerClient(CONTAINER).createIfNotExists()
        break
      } catch (e) {
        if (i > 100) throw e
        await new Promise(r => setTimeout(r, 100))
      }
    }
    this.server = http.createServer((req, res) => this.handle(req, res))
    await new Promise<void>(r => this.server!.listen(0, '127.0.0.1', () => r()))
    this.url = `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}/`
  }

  /** Environment for the action's process: @actions/cache v2 pointed at this service. */
  env(): Record<string, string> {
    return {
      ACTIONS_CACHE_SERVICE_V2: 'true',
      ACTIONS_RESULTS_URL: this.url,
      ACTIONS_RUNTIME_TOKEN: 'test-token',
      // A GitHub-hosted runner (its store is thrown away after the job): where a build without
      // signing-key may restore (store-cache.ts, unverifiedRestoreRefused).
      RUNNER_ENVIRONMENT: 'github-hosted'
    }
  }

  /** Replaces what an entry holds (as someone with write access to the cache could write it). */
  async replaceArchive(key: string, archive: Buffer): Promise<void> {
    const e = this.entries.find(x => x.key === key && x.finalized)
    if (!e) throw new Error(`no cache entry ${key}`)
    const svc = new BlobServiceClient(`http://127.0.0.1:${this.blobPort}/${ACCOUNT}`, this.cred)
    await svc.getContainerClient(CONTAINER).getBlockBlobClient(e.blob).upload(archive, archive.length)
    e.sizeBytes = archive.length
  }

  private sasUrl(blob: string): string {
    const sas = generateBlobSASQueryParameters(
      {
        containerName: CONTAINER,
        blobName: blob,
        permissions: BlobSASPermissions.parse('racwd'),
        expiresOn: new Date(Date.now() + 3600_000)
      },
      this.cred
    ).toString()
    return `http://127.0.0.1:${this.blobPort}/${ACCOUNT}/${CONTAINER}/${blob}?${sas}`
  }

  /** The Authorization header of every request (the runtime token the client sent). */
  readonly authorizations: string[] = []

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.authorizations.push(req.headers.authorization ?? '')
    let body = ''
    req.on('data', d => (body += d))
    req.on('end', () => {
      const method = /\/twirp\/github\.actions\.results\.api\.v1\.CacheService\/(\w+)$/.exec(
        req.url ?? ''
      )?.[1]
      const reply = (o: object): void => {
        res.writeHead(200, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify(o))
      }
      const data = body ? (JSON.parse(body) as Record<string, unknown>) : {}
      if (method === 'CreateCacheEntry') {
        const key = String(data.key)
        const version = String(data.version)
        if (this.entries.some(e => e.key === key && e.version === version))
          return reply({ ok: false, message: 'already exists' })
        const blob = `entry-${this.entries.length + 1}`
        this.entries.push({ key, version, blob, finalized: false, created: Date.now() })
        return reply({ ok: true, signedUploadUrl: this.sasUrl(blob) })
      }
      if (method === 'FinalizeCacheEntryUpload') {
        const e = this.entries.find(x => x.key === data.key && x.version === data.version)
        if (!e) return reply({ ok: false, message: 'no such entry' })
        e.finalized = true
        e.sizeBytes = Number(data.size_bytes ?? data.sizeBytes)
        return reply({ ok: true, entryId: String(this.entries.indexOf(e) + 1) })
      }
      if (method === 'GetCacheEntryDownloadURL') {
        const version = String(data.version)
        const usable = this.entries
          .filter(e => e.finalized && e.version === version)
          .sort((a, b) => b.created - a.created)
        const exact = usable.find(e => e.key === data.key)
        // The client sends proto field names (restore_keys); accept the JSON names too.
        const restoreKeys = ((data.restore_keys ?? data.restoreKeys) as string[] | undefined) ?? []
        const match = exact ?? restoreKeys.map(p => usable.find(e => e.key.startsWith(p))).find(Boolean)
        if (!match) return reply({ ok: false })
        return reply({ ok: true, signedDownloadUrl: this.sasUrl(match.blob), matchedKey: match.key })
      }
      res.writeHead(404, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ code: 'bad_route', msg: `no handler for ${req.url}` }))
    })
  }

  async stop(): Promise<void> {
    // close() waits for idle keep-alive connections (the cache client's) to time out: closed here.
    const server = this.server
    await new Promise<void>(r => {
      if (!server) return r()
      server.close(() => r())
      server.closeAllConnections()
    })
    // Azurite may still be writing its files: remove them only once it has exited.
    const azurite = this.azurite
    if (azurite && azurite.exitCode === null && azurite.signalCode === null) {
      const exited = new Promise<void>(r => azurite.once('exit', () => r()))
      azurite.kill()
      await exited
    }
    fs.rmSync(this.dataDir, { recursive: true, force: true, maxRetries: 5 })
  }
}
