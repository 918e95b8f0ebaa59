import { formatBytes } from '../log/format'
import { scrubSecrets } from '../secrets'
import { ClosureDiff } from './diff'
import { DeployReport, failedResult, fleetCounts, fleetRollbackWhy } from './report'

/** GitHub rejects step summaries over 1 MiB; stay well below with room for the truncation note. */
export const SUMMARY_LIMIT = 1024 * 1024 - 4096

const entity = (c: string): string => `&#${c.charCodeAt(0)};`

/** Text inside <pre>: an HTML block, which Markdown leaves as it is (no links, no markup in it). */
export function escapeHtml(s: string): string {
  return scrubSecrets(s).replace(/[&<>"'`|]/g, entity)
}

/**
 * What in text makes Markdown, as GitHub renders it (cmark-gfm with its extensions): HTML; inline
 * syntax (links, images, footnotes, code, emphasis, strikethrough, a table's pipes, backslashes);
 * a heading or list where the text starts a line; line ends; and autolinks: `://`, `www.`, and the
 * `@` of an e-mail address (a letter in what follows it: `root@10.0.0.2` is not one).
 */
const MARKDOWN =
  /[&<>"'`|\\[\]*_~]|(?<=^\s*)[#+=-]|(?<=^\s*\d{1,9})[.)](?=\s|$)|:(?=\/\/)|(?<=www)\.|(?<=[\w.+-])@(?=[\w.-]*[a-z])|\r\n?|\n/gi

/**
 * Text from Nix, the target or inputs as literal text in the summary (table cells, headings, inline
 * HTML): MARKDOWN as entities, line ends as <br>, and an e-mail's `@` in a <span> of its own: the
 * autolink extension looks for addresses in text with entities decoded, even inside <code>, and a
 * tag between the parts stops it. Secrets are scrubbed first: escaped, a token would no longer
 * match its mask (`ghs&#95;…` renders as the token), and the summary's cut could halve it.
 */
export function escapeMarkdown(s: string): string {
  return scrubSecrets(s).replace(MARKDOWN, c =>
    c === '@' ? '<span>@</span>' : /[\r\n]/.test(c) ? '<br>' : entity(c)
  )
}

const VERDICT: Record<string, string> = {
  deployed: '✅ Deployed',
  unchanged: '✅ Unchanged: the target already runs this system',
  built: '✅ Built (not deployed)',
  'dry-activated': '✅ Dry-activated',
  'rolled-back': '⚠️ Rolled back: the new system failed and the target is back on its previous system',
  failed: '❌ Failed',
  skipped: '⏭️ Skipped'
}

/** A `user@host` in prose (one capture group: split keeps it). */
const USER_AT_HOST = /([\w.-]+@[\w.[\]:-]*[\w\]])/

/** Prose for the summary: escaped, and every `user@host` in it shown as code. */
export function prose(s: string): string {
  return s
    .split(USER_AT_HOST)
    .map((part, i) => (i % 2 === 1 ? code(part) : escapeMarkdown(part)))
    .join('')
}

function code(s: string): string {
  return `<code>${escapeMarkdown(s)}</code>`
}

/** deployment.tags as the machines input selects them: `@edge @rack1`. */
function tagList(tags: string[]): string {
  return tags.map(t => `@${t}`).join(' ')
}

/** A store path as a table has room for: its name, then the first 8 characters of its hash. */
export function shortStorePath(p: string): string {
  const m = /^\/nix\/store\/([0-9a-z]{32})-(.+)$/.exec(p)
  return m ? `${m[2]} (${m[1].slice(0, 8)})` : p
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

function codeBlock(text: string): string {
  return `<pre>${escapeHtml(text)}</pre>`
}

/**
 * Renders the job summary (Markdown with HTML). Everything that comes from Nix, the Pi or inputs is
 * escaped (escapeMarkdown; escapeHtml inside <pre>); the whole is cut to SUMMARY_LIMIT with an
 * explicit note.
 */
export function renderSummary(r: DeployReport): string {
  if (r.hosts && r.hosts.length > 0) return truncateSummary(renderMachines(r))
  return truncateSummary(renderOne(r))
}

/**
 * Several machines: the verdict (the worst result), one table row per machine, then each machine's
 * own summary in a collapsible section (open when it did not succeed).
 */
function renderMachines(r: DeployReport): string {
  const hosts = r.hosts!
  const { failed, reverted } = fleetCounts(hosts.map(h => h.report))
  const verdict = VERDICT[r.result ?? 'failed'] ?? r.result
  const counts = failed > 0 ? `${failed} of ${hosts.length} machines` : `${hosts.length} machines`
  const lines = [
    `### nix-deploy-action: ${verdict} (${counts}${reverted > 0 ? `; ${reverted} rolled back by rollback-fleet` : ''})`,
    ''
  ]
  // What failed and what to do first: a reviewer must not have to find it in the table.
  for (const { machine, report: h } of hosts)
    if (h.error)
      lines.push(
        `**${escapeMarkdown(machine)} failed (${h.error.phase}):** ${prose(h.error.message)}`,
        '',
        `**What to do:** ${prose(h.error.hint)}`,
        ''
      )
  for (const { machine, report: h } of hosts) {
    const why = fleetRollbackWhy(h)
    if (why)
      lines.push(
        `**${escapeMarkdown(machine)} rolled back (rollback-fleet):** back on ${code(h.rolledBackTo ?? 'what it ran')}: ${prose(why)}`,
        ''
      )
  }
  for (const w of r.warnings) lines.push(`> [!WARNING]`, `> ${prose(w)}`, '')
  lines.push(...machineTable(hosts), '')
  if (r.builtDerivations !== undefined)
    lines.push(`Derivations built (all machines, together): ${r.builtDerivations}`, '')
  if (r.published) lines.push(`Published to ${code(r.published.uri)} in ${seconds(r.published.ms)}`, '')
  for (const { machine, report: h } of hosts) {
    const ok = !failedResult(h)
    const body = renderOne(h).split('\n').slice(1).join('\n')
    lines.push(
      `<details${ok ? '' : ' open'}><summary>${escapeMarkdown(machine)}: ${escapeMarkdown(verdictOf(h))}</summary>`,
      '',
      body,
      '',
      '</details>',
      ''
    )
  }
  return lines.join('\n')
}

/** The fleet's table: one row per machine, with what it ran and how long it took. */
function machineTable(hosts: NonNullable<DeployReport['hosts']>): string[] {
  const rows = [
    '| Machine | Host | Mode | Result | Store path | Generation | Closure | Copied | Time |',
    '|---|---|---|---|---|---|---|---|---|'
  ]
  for (const { machine, report: h } of hosts) {
    const total = h.timings.reduce((a, t) => a + t.ms, 0)
    const cells = [
      escapeMarkdown(h.tags?.length ? `${machine} (${tagList(h.tags)})` : machine),
      h.host ? code(h.host) : '',
      escapeMarkdown(h.mode ?? ''),
      escapeMarkdown(h.result ?? 'failed'),
      escapeMarkdown(h.storePath ? shortStorePath(h.storePath) : ''),
      h.generation?.toString() ?? '',
      h.closureSize === undefined ? '' : formatBytes(h.closureSize),
      h.copiedBytes === undefined ? '' : formatBytes(h.copiedBytes),
      seconds(total)
    ]
    rows.push(`| ${cells.join(' | ')} |`)
  }
  return rows
}

function verdictOf(r: DeployReport): string {
  if (r.fleetRollback) return '↩️ Rolled back by rollback-fleet: another machine failed'
  if (r.failureRolledBack) return '↩️ Rolled back by rollback-fleet after its own deploy failed'
  return VERDICT[r.result ?? 'failed'] ?? r.result ?? ''
}

function renderOne(r: DeployReport): string {
  const lines: string[] = []
  const verdict = verdictOf(r)
  lines.push(`### nix-deploy-action: ${verdict}`, '')
  if (r.error) {
    lines.push(
      `**Error (${r.error.phase}):** ${prose(r.error.message)}`,
      '',
      `**What to do:** ${prose(r.error.hint)}`,
      ''
    )
  }
  for (const w of r.warnings) lines.push(`> [!WARNING]`, `> ${prose(w)}`, '')

  const rows = summaryRows(r)
  lines.push('| | |', '|---|---|')
  for (const [k, v] of rows)
    if (v !== undefined && v !== '') lines.push(`| ${k} | ${AS_CODE.has(k) ? code(v) : prose(v)} |`)
  lines.push('')

  lines.push(...renderSections(r))
  return lines.join('\n')
}

/** Rows whose value is a host or a store path: shown as code (no autolink, no wrapping surprises). */
const AS_CODE = new Set(['Host', 'Store path', 'Previous store path', 'Rolled back to'])

/** The summary table's rows: what the run did, where, and how much. */
function summaryRows(r: DeployReport): Array<[string, string | undefined]> {
  return [
    ['Result', r.result],
    ['Machine', r.machine],
    ['Tags', r.tags?.length ? tagList(r.tags) : undefined],
    ['Host', r.host],
    [
      'Mode',
      r.mode && r.requestedMode && r.mode !== r.requestedMode
        ? `${r.mode} (asked: ${r.requestedMode})`
        : r.mode
    ],
    ['Configuration', r.flake],
    ['Published to', r.published && `${code(r.published.uri)} in ${seconds(r.published.ms)}`],
    ['Platform', r.platform && r.binfmt ? `${r.platform} (${r.binfmt})` : r.platform],
    ['Store path', r.storePath],
    ['Previous store path', r.previousStorePath],
    ['Rolled back to', r.rolledBackTo],
    ['Changed', r.changed === undefined ? undefined : String(r.changed)],
    ['Generation', r.generation?.toString()],
    ['Reboot', rebootRow(r)],
    ['Confirmed', r.confirmed],
    ['Health checks', r.healthChecks],
    ['Waited for the deploy lock', r.lockWaitMs ? seconds(r.lockWaitMs) : undefined],
    ['Old generations deleted', r.deletedGenerations?.length ? r.deletedGenerations.join(', ') : undefined],
    ['Derivations built', r.builtDerivations?.toString()],
    ['Store cache', cacheRow(r.cache)],
    [
      'Closure',
      r.closureSize === undefined
        ? undefined
        : `${formatBytes(r.closureSize)} in ${r.closurePaths ?? '?'} paths`
    ],
    [
      'Substituted on the target',
      r.substitutedPaths
        ? `${formatBytes(r.substitutedBytes ?? 0)} (NAR) in ${r.substitutedPaths} paths, from its own substituters${r.substitutedFrom ? ` and ${r.substitutedFrom}` : ''}`
        : undefined
    ],
    [
      'Copied',
      r.copiedBytes === undefined
        ? undefined
        : `${formatBytes(r.copiedBytes)} (NAR) in ${r.copiedPaths ?? 0} paths, ${formatBytes(r.wireBytes ?? 0)} on the wire${r.compression && r.compression !== 'none' ? ` (${r.compression})` : ''}`
    ]
  ]
}

/** What the store cache's restore did, and what it trusted. */
function cacheRow(c: DeployReport['cache']): string | undefined {
  if (c === undefined) return undefined
  if (!c.available) return 'no cache service'
  if (c.refused) return c.refused
  if (!c.hit)
    return c.key ? `entry ${c.key} not imported (see the warning)` : 'no entry yet (saved after this run)'
  const signed = c.signedBy ? `, every path verified against ${c.signedBy}` : ''
  return `restored ${c.paths} paths (${formatBytes(c.bytes ?? 0)}) from ${c.key} in ${seconds(c.ms ?? 0)}${signed}`
}

/** Whether the new system needs a reboot to run (its boot files against what the target booted). */
function rebootRow(r: DeployReport): string | undefined {
  if (r.earlierTrial)
    return r.bootTrial === 'went-back'
      ? "an earlier run's boot trial of this system, checked by this run, failed: the target went back to its previous system"
      : `an earlier run rebooted into this system on trial and did not settle it: checked and confirmed by this run${r.rebootConfirmedMs !== undefined ? ` in ${seconds(r.rebootConfirmedMs)}` : ''}`
  if (r.bootTrial === 'went-back')
    return 'rebooted into the new system on trial: not confirmed, the target went back to its previous system'
  if (r.rebootMs !== undefined && r.bootTrial === 'confirmed' && r.rebootConfirmedMs !== undefined)
    return `rebooted into the new system in ${seconds(r.rebootMs)}, checked and confirmed ${seconds(r.rebootConfirmedMs)} later (boot trial confirmed${r.bootOnce ? '; booted once, then made the default' : ''})`
  if (r.rebootMs !== undefined)
    return `rebooted into the new system in ${seconds(r.rebootMs)}${r.bootTrial === 'confirmed' ? ' (boot trial confirmed)' : ''}`
  if (r.needsReboot === undefined) return undefined
  if (!r.needsReboot) return 'not needed'
  const against = r.mode === 'build' ? 'the diff-against system' : 'what the target booted'
  return `this change needs a reboot: its kernel, initrd, kernel modules or kernel parameters differ from ${against}`
}

/** Timings, the package diff, dry-activate's units, the activation output and error details. */
function renderSections(r: DeployReport): string[] {
  const lines: string[] = []
  if (r.timings.length > 0) {
    const total = r.timings.reduce((a, t) => a + t.ms, 0)
    lines.push('| Phase | Time |', '|---|---|')
    for (const t of r.timings) lines.push(`| ${t.phase} | ${seconds(t.ms)} |`)
    lines.push(`| **total** | **${seconds(total)}** |`, '')
  }
  if (r.diff) lines.push(...renderDiff(r.diff, r.diffBaseline ?? 'the current system'))
  if (r.dryActivate && r.dryActivate.length > 0) {
    lines.push('#### Units dry-activate reports', '', '| Would | Units |', '|---|---|')
    for (const d of r.dryActivate)
      lines.push(`| ${escapeMarkdown(d.action)} | ${escapeMarkdown(d.units.join(', '))} |`)
    lines.push('')
  }
  if (r.activationLog)
    lines.push(
      '<details><summary>Activation output</summary>',
      '',
      codeBlock(r.activationLog),
      '',
      '</details>',
      ''
    )
  if (r.error?.details)
    lines.push(
      '<details open><summary>Details</summary>',
      '',
      codeBlock(r.error.details),
      '',
      '</details>',
      ''
    )

  return lines
}

function signedBytes(n: number): string {
  return `${n >= 0 ? '+' : '−'}${formatBytes(Math.abs(n))}`
}

/** Other paths listed in the diff at most (a reviewer reads names, not thousands of lines). */
const MAX_OTHER_PATHS = 200
/** Sizes of other paths are shown from this size on: a large `etc` or firmware matters, a unit file does not. */
const LARGE_PATH_BYTES = 100 * 1024

/** The package diff, like nvd: the system's own change, version changes, added, removed, closure size. */
export function renderDiff(d: ClosureDiff, baseline: string): string[] {
  const lines = [`#### Changes against ${prose(baseline)}`, '']
  const v = (xs: string[]): string => escapeMarkdown(xs.join(', '))
  if (d.system) {
    const [before, after] = [d.system.before, d.system.after].map(shortStorePath)
    lines.push(`System: ${code(before)} → ${code(after)}`, '')
  }
  if (d.changed.length + d.added.length + d.removed.length === 0)
    lines.push('No package versions change.', '')
  else {
    lines.push('| | Package | Before | After |', '|---|---|---|---|')
    for (const c of d.changed)
      lines.push(`| ↕ | ${escapeMarkdown(c.pname)} | ${v(c.before)} | ${v(c.after)} |`)
    for (const a of d.added) lines.push(`| + | ${escapeMarkdown(a.pname)} | | ${v(a.versions)} |`)
    for (const r of d.removed) lines.push(`| − | ${escapeMarkdown(r.pname)} | ${v(r.versions)} | |`)
    lines.push('')
  }
  const size =
    d.sizeBefore !== undefined && d.sizeAfter !== undefined
      ? `; closure ${formatBytes(d.sizeBefore)} → ${formatBytes(d.sizeAfter)} (${signedBytes(d.sizeAfter - d.sizeBefore)})`
      : ''
  lines.push(
    `${d.changed.length} changed, ${d.added.length} added, ${d.removed.length} removed; ${d.otherPathsChanged} other paths (configuration, units) differ; ${d.pathsBefore} → ${d.pathsAfter} paths${size}.`,
    ''
  )
  if (d.otherPaths.length > 0) {
    lines.push(
      `<details><summary>The ${d.otherPaths.length} other paths (configuration, units)</summary>`,
      '',
      '| | Path | Size |',
      '|---|---|---|'
    )
    for (const o of d.otherPaths.slice(0, MAX_OTHER_PATHS)) {
      const size = o.narSize !== undefined && o.narSize >= LARGE_PATH_BYTES ? formatBytes(o.narSize) : ''
      lines.push(`| ${o.change} | ${escapeMarkdown(o.name)} | ${size} |`)
    }
    if (d.otherPaths.length > MAX_OTHER_PATHS)
      lines.push(`| | … and ${d.otherPaths.length - MAX_OTHER_PATHS} more | |`)
    lines.push('', '</details>', '')
  }
  return lines
}

export function truncateSummary(md: string, limit = SUMMARY_LIMIT): string {
  if (Buffer.byteLength(md, 'utf8') <= limit) return md
  const note =
    '\n\n**(summary truncated: it exceeded the 1 MiB limit of job summaries; the step log has everything)**\n'
  let cut = md.slice(0, limit - note.length)
  while (Buffer.byteLength(cut, 'utf8') > limit - note.length) cut = cut.slice(0, -1024)
  // Do not leave an open <pre> or <details> behind.
  if (cut.lastIndexOf('<pre>') > cut.lastIndexOf('</pre>')) cut += '</pre>'
  if (cut.lastIndexOf('<details') > cut.lastIndexOf('</details>')) cut += '</details>'
  return cut + note
}
