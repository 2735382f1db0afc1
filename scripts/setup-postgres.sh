#!/usr/bin/env bash
# Installs Debian's PostgreSQL server unless its programs are there already, and prints the
# directory of its programs (initdb, postgres, psql). The tests start a throwaway cluster with
# them (crates/orbit-testkit/src/postgres.rs) unless ORBIT_TEST_DATABASE_URL names a server.
set -euo pipefail

# The newest version's program directory that has what the tests run.
find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | awk -F/ '{ print $4 " " $0 }' | sort -n |
    while read -r _version dir; do
      if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/psql" ]; then echo "$dir"; fi
    done | tail -1
}

bin="$(find_bin)"
if [ -z "$bin" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-postgres: PostgreSQL is missing; install Debian's 'postgresql' package (needs root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # The package's own cluster is not needed: the tests make their own, so none is created.
  mkdir -p /etc/postgresql-common
  if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >&2
  bin="$(find_bin)"
fi
if [ -z "$bin" ]; then
  echo "setup-postgres: no PostgreSQL programs under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "$bin"
