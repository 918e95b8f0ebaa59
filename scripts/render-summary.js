// Renders job summaries (GitHub-flavoured Markdown with HTML, as GitHub shows them) into one HTML
// page, so a person can look at what the demo's runs would show on GitHub.
// usage: node scripts/render-summary.js OUT.html SUMMARY.md...
'use strict'
const fs = require('fs')
const { marked } = require('marked')
const [out, ...inputs] = process.argv.slice(2)
const body = inputs
  .map(f => `<section>${marked.parse(fs.readFileSync(f, 'utf8'), { gfm: true })}</section>`)
  .join('\n<hr>\n')
fs.writeFileSync(
  out,
  `<!doctype html><html><head><meta charset="utf-8"><title>nix-deploy-action job summaries</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.3rem .6rem}
pre{background:#f6f8fa;padding:.6rem;overflow:auto}blockquote{border-left:4px solid #d4a72c;margin:0;padding:0 1rem;color:#57606a}</style>
</head><body>${body}</body></html>\n`
)
console.log(`summary rendered to ${out}`)
