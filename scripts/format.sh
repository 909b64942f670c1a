#!/usr/bin/env bash
# Runs clang-format over the project's C sources: `check` (default) or `fix`.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-check}
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | grep -v '\.pb-c\.' || true)
[ ${#files[@]} -gt 0 ] || exit 0
if [ "$mode" = fix ]; then
	clang-format -i "${files[@]}"
else
	clang-format --dry-run -Werror "${files[@]}"
	echo "format: ${#files[@]} files clean"
fi
