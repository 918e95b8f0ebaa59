#!/usr/bin/env bash
# Cuts release vX.Y.Z of the action on the current commit of main (README: Versioning):
#   1. checks: a clean work tree on main, a version newer than package.json's and not tagged yet,
#      a CHANGELOG.md section "## [X.Y.Z]" with entries, dist/ the fresh bundle of src/;
#   2. sets the version in package.json and package-lock.json and commits "Release vX.Y.Z";
#   3. tags it vX.Y.Z (annotated, with the CHANGELOG section) and moves the major tag vX to it.
# It pushes nothing: it prints the two pushes (the major tag is moved with --force, as users'
# `uses: org/nix-deploy-action@vX` follow it). .github/workflows/release.yml then publishes the
# GitHub release from the tag.
# usage: scripts/release.sh X.Y.Z
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "release: $*" >&2; exit 1; }

version=${1:-}
[[ $version =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] || die "usage: scripts/release.sh X.Y.Z (got '${version}')"
major=v${version%%.*}
[ "$(git rev-parse --abbrev-ref HEAD)" = main ] || die "releases are cut from main (this is $(git rev-parse --abbrev-ref HEAD))"
[ -z "$(git status --porcelain)" ] || die "the work tree has changes: commit or stash them first"
! git rev-parse -q --verify "refs/tags/v$version" >/dev/null || die "v$version is tagged already"
current=$(node -p 'require("./package.json").version')
newest=$(printf '%s\n%s\n' "$current" "$version" | sort -V | tail -n 1)
if [ "$version" = "$current" ] || [ "$newest" != "$version" ]; then die "$version is not newer than package.json's $current"; fi
notes=$(node scripts/release-notes.js "$version") || die "write the release's entries under '## [$version]' in CHANGELOG.md first"
# A check that only the release tests skip (they have no bundle to build): dist/ is what users run.
[ "${NDA_RELEASE_SKIP_DIST_CHECK:-}" = 1 ] || node scripts/check-dist.js || die "dist/ is not the bundle of src/"

npm version "$version" --no-git-tag-version --allow-same-version >/dev/null
git commit -q -m "Release v$version" -- package.json package-lock.json
git tag -a "v$version" -m "v$version" -m "$notes"
git tag -f -a "$major" -m "$major: v$version" >/dev/null
echo "release: v$version ($major moved to it). Publish with:"
echo "  git push origin main v$version && git push --force origin $major"
