#!/usr/bin/env bash
# Installs what the tests need, then runs every test of the workspace and prints the total.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ORBIT_TEST_CLAUDE_BIN="$("$root/scripts/setup-claude.sh")"
export ORBIT_TEST_CLAUDE_BIN
# Headless Chromium for the web console's browser tests (they fail without it, unless
# ORBIT_SKIP_BROWSER=1).
"$root/scripts/setup-chromium.sh"
# The PostgreSQL store's tests start a throwaway cluster with these programs, unless
# ORBIT_TEST_DATABASE_URL names a server to make their databases in.
if [ -z "${ORBIT_TEST_DATABASE_URL:-}" ]; then
  ORBIT_TEST_POSTGRES_BIN="$("$root/scripts/setup-postgres.sh")"
  export ORBIT_TEST_POSTGRES_BIN
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace: cargo's own last line is the summary of
# whichever test binary ran last, which may hold no tests at all.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
