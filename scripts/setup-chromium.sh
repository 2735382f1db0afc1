#!/usr/bin/env bash
# Installs Debian's headless browser for the web console's tests (chromium and its WebDriver,
# chromium-driver) unless it is there already. Set ORBIT_SKIP_BROWSER=1 to skip those tests
# instead.
set -euo pipefail
if [ "${ORBIT_SKIP_BROWSER:-}" = "1" ]; then
  exit 0
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then
  sudo="sudo"
fi
echo "installing chromium and chromium-driver for the console's browser tests" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
