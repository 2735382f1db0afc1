#!/usr/bin/env bash
# Starts the Orbit server on the filesystem store (data in ~/.orbit unless --data-dir).
# Uses `claude` from PATH (or ORBIT_CLAUDE_BIN); otherwise installs the pinned CLI locally.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${ORBIT_CLAUDE_BIN:-}" ] && ! command -v claude >/dev/null 2>&1; then
  ORBIT_CLAUDE_BIN="$("$root/scripts/setup-claude.sh")"
  export ORBIT_CLAUDE_BIN
fi
exec cargo run --release --locked -p orbit-server -- "$@"
