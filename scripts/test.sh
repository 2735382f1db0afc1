#!/usr/bin/env bash
# Installs what the tests need, then runs every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ORBIT_TEST_CLAUDE_BIN="$("$root/scripts/setup-claude.sh")"
export ORBIT_TEST_CLAUDE_BIN
cargo test --workspace --locked "$@"
