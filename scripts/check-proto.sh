#!/usr/bin/env bash
# Schema-evolution gate: `buf lint` on proto/ and `buf breaking` of proto/ (the
# working tree) against proto/ at the commit named in proto/BASELINE (the last
# release). Installs the pinned buf (tools/buf/package-lock.json) into
# tools/buf/node_modules/ on first use. See proto/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
	echo "check-proto: $*" >&2
	exit 1
}

# --- buf, pinned in tools/buf/package.json, installed once per checkout.
buf=tools/buf/node_modules/.bin/buf
pinned=$(sed -n 's/^ *"@bufbuild\/buf": *"\([^"]*\)".*/\1/p' tools/buf/package.json)
[ -n "$pinned" ] || die "no @bufbuild/buf version in tools/buf/package.json"
have=$("$buf" --version 2>/dev/null || true)
if [ "$have" != "$pinned" ]; then
	command -v npm >/dev/null ||
		die "npm not found: run scripts/install-deps.sh (installs nodejs and npm)"
	echo "check-proto: installing buf $pinned into tools/buf/node_modules"
	# --ignore-scripts: the package's postinstall only re-fetches the platform
	# binary when optional dependencies were skipped; the version check below
	# catches that case instead.
	(cd tools/buf && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) ||
		die "npm ci in tools/buf failed"
	have=$("$buf" --version 2>/dev/null || true)
	[ "$have" = "$pinned" ] ||
		die "buf $pinned did not install (got '${have:-nothing}'); is this platform supported by @bufbuild/buf?"
fi

# --- the baseline: a full commit id, present in this clone.
[ -f proto/BASELINE ] || die "proto/BASELINE is missing"
baseline=$(tr -d '[:space:]' <proto/BASELINE)
[[ $baseline =~ ^[0-9a-f]{40}$ ]] ||
	die "proto/BASELINE must hold one full 40-hex commit id, not '$baseline'"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
	die "not a git checkout: the baseline is read from git history"
if ! git cat-file -e "$baseline^{commit}" 2>/dev/null; then
	if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
		hint="this is a shallow clone: run 'git fetch --unshallow' (CI needs the full history)"
	else
		hint="fetch the release history, or fix proto/BASELINE"
	fi
	die "baseline commit $baseline (proto/BASELINE) is not in this clone; $hint"
fi
git cat-file -e "$baseline:proto" 2>/dev/null ||
	die "baseline commit $baseline has no proto/ folder"
gitdir=$(git rev-parse --path-format=absolute --git-common-dir)

# --- the gates.
"$buf" lint proto || die "buf lint failed (see above)"
"$buf" breaking proto --against "$gitdir#format=git,ref=$baseline,subdir=proto" ||
	die "breaking change against the baseline ${baseline:0:12} (see above and proto/README.md)"
echo "check-proto: lint clean, no breaking change against ${baseline:0:12} (buf $pinned)"
