#!/usr/bin/env node
// Prints the CHANGELOG.md section of one version (`## [X.Y.Z] …` up to the next `## `), for the
// release tag's message and the GitHub release. Exit 1 when there is none, or it is empty.
'use strict'
const fs = require('fs')
const path = require('path')

function releaseNotes(changelog, version) {
  const lines = changelog.split('\n')
  const start = lines.findIndex(l => l.startsWith(`## [${version}]`))
  if (start < 0) return undefined
  const end = lines.findIndex((l, i) => i > start && l.startsWith('## '))
  const body = lines.slice(start + 1, end < 0 ? undefined : end).join('\n').trim()
  return body === '' ? undefined : body
}

if (require.main === module) {
  const version = process.argv[2]
  const file = process.argv[3] || path.join(__dirname, '..', 'CHANGELOG.md')
  const notes = version && releaseNotes(fs.readFileSync(file, 'utf8'), version)
  if (!notes) {
    console.error(`release-notes: CHANGELOG.md has no entries under "## [${version}]"`)
    process.exit(1)
  }
  console.log(notes)
}
module.exports = { releaseNotes }
