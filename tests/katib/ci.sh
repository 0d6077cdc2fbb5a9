#!/usr/bin/env bash
# What CI runs of tests/katib (see README.md, "For .ci/run"): Katib's recorded answers, and Katib's real DB
# manager on a throwaway PostgreSQL. Installs PostgreSQL only when it is missing. Exit 0 when every check passed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [[ -z "${PG_BIN:-}" ]]; then
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO=sudo; fi
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi

tmp="$(mktemp -d)"
rig_dir=""
cleanup() {
  if [[ -n "$rig_dir" ]]; then "$HERE/rig.sh" stop "$rig_dir" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== tests/katib: build the oracle, Katib's client and katib-db-manager (katib v0.19.0)"
"$HERE/rig.sh" build >"$tmp/bin.env"
set -a; . "$tmp/bin.env"; set +a

echo "== tests/katib: Katib's answers to the hard cases are the recorded ones"
python3 "$HERE/expect.py" --oracle "$ORACLE"

echo "== tests/katib: katib-db-manager on PostgreSQL, on loopback"
"$HERE/rig.sh" start >"$tmp/rig.env"
rig_dir="$(sed -n 's/^KATIB_RIG_DIR=//p' "$tmp/rig.env")"
set -a; . "$tmp/rig.env"; set +a
"$DBCLIENT" -addr "$KATIB_DB_MANAGER_ADDR" selftest
