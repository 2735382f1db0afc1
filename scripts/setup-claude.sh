#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into .orbit-tools/ (git-ignored) unless it is there
# already, and prints the path of its binary. Orbit drives this exact version in its tests.
set -euo pipefail
CLAUDE_CODE_VERSION="2.1.330"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.orbit-tools"
bin="$tools/node_modules/@anthropic-ai/claude-code/bin/claude.exe"

installed_version() { "$bin" --version 2>/dev/null | awk '{print $1}'; }

if [ ! -x "$bin" ] || [ "$(installed_version)" != "$CLAUDE_CODE_VERSION" ]; then
  mkdir -p "$tools"
  # Pinned: on node 20 an unpinned install silently picks an older release.
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2
  # npm 11 may skip the package's postinstall; the binary ships in the package, but run the
  # installer when it is missing.
  if [ ! -x "$bin" ]; then
    (cd "$tools/node_modules/@anthropic-ai/claude-code" && node install.cjs >&2)
  fi
fi
if [ "$(installed_version)" != "$CLAUDE_CODE_VERSION" ]; then
  echo "setup-claude: expected Claude Code $CLAUDE_CODE_VERSION at $bin" >&2
  exit 1
fi
echo "$bin"
