#!/usr/bin/env bash
# Katib's own code as a test rig: the oracle (Katib's CollectObservationLog), Katib's gRPC client (dbclient) and
# the real katib-db-manager (cmd/db-manager/v1beta1 of github.com/kubeflow/katib v0.19.0) on a throwaway
# PostgreSQL cluster, everything on loopback.
#
#   tests/katib/rig.sh build        # build or reuse the three binaries; prints ORACLE=… DBCLIENT=… DB_MANAGER=…
#   tests/katib/rig.sh start        # build, then PostgreSQL + katib-db-manager; prints KEY=VALUE lines
#   tests/katib/rig.sh stop [DIR]   # tear down the rig started in DIR (default: $KATIB_RIG_DIR), by PID
#
# Environment: KATIB_BIN_DIR (binary cache, default <repo>/target/katib-bin), KATIB_RIG_DIR (where start puts the
# cluster, logs and the env file; default a new /tmp/katib-rig.XXXXXX), PG_BIN (PostgreSQL's bin directory;
# default the newest /usr/lib/postgresql/*/bin), PG_OS_USER (the non-root user PostgreSQL runs as when this
# script runs as root; default postgres, else nobody). Go builds use GOTOOLCHAIN=local and -mod=readonly: the
# committed go.sum files are the only source of truth, nothing is upgraded.
#
# `start` prints, and writes to $KATIB_RIG_DIR/env:
#   KATIB_DB_MANAGER_ADDR=127.0.0.1:PORT  KATIB_DB_MANAGER_PID=…  KATIB_RIG_DIR=…  PGHOST=127.0.0.1  PGPORT=…
#   PGUSER=katib  PGPASSWORD=katib  PGDATABASE=katib  POSTGRES_PID=…  ORACLE=…  DBCLIENT=…  DB_MANAGER=…
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../rig-common.sh
. "$HERE/../rig-common.sh"
REPO="$(cd "$HERE/../.." && pwd)"
KATIB_VERSION="$(awk '$1 == "github.com/kubeflow/katib" {print $2}' "$HERE/oracle/go.mod")"

log() { echo "rig: $*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------------------------------------------ build
cache_key() {
  # Katib's version, the Go toolchain, and every file that goes into the three binaries.
  local go_version sum
  go_version="$(GOTOOLCHAIN=local go env GOVERSION)"
  sum="$(cd "$HERE" && cat oracle/go.mod oracle/go.sum oracle/*.go dbclient/go.mod dbclient/go.sum dbclient/*.go \
    dbmanager/go.mod dbmanager/go.sum | sha256sum | cut -c1-12)"
  echo "katib-${KATIB_VERSION}-${go_version}-${sum}"
}

build() {
  command -v go >/dev/null || die "go is not installed"
  local cache dir
  cache="${KATIB_BIN_DIR:-$REPO/target/katib-bin}"
  dir="$cache/$(cache_key)"
  if [[ -x "$dir/oracle" && -x "$dir/dbclient" && -x "$dir/katib-db-manager" ]]; then
    log "reusing $dir"
  else
    mkdir -p "$dir.tmp"
    local start=$SECONDS
    export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
    (cd "$HERE/oracle" && go build -trimpath -o "$dir.tmp/oracle" .)
    (cd "$HERE/dbclient" && go build -trimpath -o "$dir.tmp/dbclient" .)
    # The tool directive in dbmanager/go.mod names Katib's main package; go build builds it from the module cache.
    (cd "$HERE/dbmanager" && go build -trimpath -o "$dir.tmp/katib-db-manager" github.com/kubeflow/katib/cmd/db-manager/v1beta1)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    log "built $dir in $((SECONDS - start)) s"
    # Binaries of other keys (an older Katib, Go or source) are stale: keep only this one.
    local old
    for old in "$cache"/katib-*; do
      if [[ -d "$old" && "$old" != "$dir" ]]; then rm -rf "$old"; fi
    done
  fi
  ORACLE="$dir/oracle" DBCLIENT="$dir/dbclient" DB_MANAGER="$dir/katib-db-manager"
}

# ------------------------------------------------------------------------------------------------------ start
# Runs a command as the PostgreSQL OS user (postgres refuses to run as root).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

start() {
  build
  local pg_bin="${PG_BIN:-}"
  if [[ -z "$pg_bin" ]]; then
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  fi
  [[ -x "$pg_bin/initdb" ]] || die "PostgreSQL's initdb not found (set PG_BIN; Debian: apt-get install postgresql)"
  PG_OS_USER="${PG_OS_USER:-$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)}"

  local rig="${KATIB_RIG_DIR:-}"
  if [[ -z "$rig" ]]; then rig="$(mktemp -d /tmp/katib-rig.XXXXXX)"; fi
  mkdir -p "$rig"
  chmod 755 "$rig"
  : >"$rig/env"
  # On any failure from here on, stop what was started (by PID) and keep the logs. (The trap runs after this
  # function returned: it reads a global.)
  STARTING_RIG="$rig"
  trap 'status=$?; if ((status != 0)); then log "start failed: see the logs in $STARTING_RIG"; stop "$STARTING_RIG" keep >/dev/null 2>&1 || true; fi' EXIT

  # A throwaway cluster: trust for the OS user on its own socket, passwords on loopback TCP.
  local pgdata="$rig/pgdata" sock="$rig/sock" pglog="$rig/pglog" pgport
  mkdir -p "$pgdata" "$sock" "$pglog"
  if [[ "$(id -u)" == 0 ]]; then chown "$PG_OS_USER" "$pgdata" "$sock" "$pglog"; fi
  as_pg "$pg_bin/initdb" -D "$pgdata" -U postgres -E UTF8 --locale=C --auth-local=trust \
    --auth-host=scram-sha-256 >"$rig/initdb.log" 2>&1
  pgport="$(free_port)"
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$pglog/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $sock -c fsync=off" start >"$rig/pg_ctl.log" 2>&1
  local pg_pid
  pg_pid="$(head -1 "$pgdata/postmaster.pid")"
  echo "POSTGRES_PID=$pg_pid" >>"$rig/env"
  echo "PG_BIN=$pg_bin" >>"$rig/env"
  echo "PG_OS_USER=$PG_OS_USER" >>"$rig/env"
  as_pg "$pg_bin/psql" -h "$sock" -p "$pgport" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE katib LOGIN PASSWORD 'katib'" -c "CREATE DATABASE katib OWNER katib" >>"$rig/pg_ctl.log" 2>&1

  # katib-db-manager: DB_NAME selects the driver (pkg/db/v1beta1/db.go), the KATIB_POSTGRESQL_* variables and
  # DB_USER/DB_PASSWORD the connection (pkg/db/v1beta1/postgres/postgres.go, getDbName; common/const.go);
  # -listen-address the gRPC address (cmd/db-manager/v1beta1/main.go, default 0.0.0.0:6789).
  local port
  port="$(free_port)"
  DB_NAME=postgres DB_USER=katib DB_PASSWORD=katib KATIB_POSTGRESQL_DB_HOST=127.0.0.1 \
    KATIB_POSTGRESQL_DB_PORT="$pgport" KATIB_POSTGRESQL_DB_DATABASE=katib KATIB_POSTGRESQL_SSL_MODE=disable \
    setsid "$DB_MANAGER" -listen-address "127.0.0.1:$port" -connect-timeout 60s \
    </dev/null >"$rig/db-manager.log" 2>&1 &
  local dbm_pid=$!
  echo "KATIB_DB_MANAGER_PID=$dbm_pid" >>"$rig/env"

  # It tries the database first after ConnectInterval (5 s, pkg/db/v1beta1/common/const.go), then listens.
  local deadline=$((SECONDS + 90))
  until "$DBCLIENT" -addr "127.0.0.1:$port" health >/dev/null 2>&1; do
    kill -0 "$dbm_pid" 2>/dev/null || { cat "$rig/db-manager.log" >&2; die "katib-db-manager exited"; }
    ((SECONDS < deadline)) || die "katib-db-manager not healthy after 90 s"
    sleep 0.5
  done
  trap - EXIT

  cat >>"$rig/env" <<EOF
KATIB_DB_MANAGER_ADDR=127.0.0.1:$port
KATIB_RIG_DIR=$rig
PGHOST=127.0.0.1
PGPORT=$pgport
PGUSER=katib
PGPASSWORD=katib
PGDATABASE=katib
ORACLE=$ORACLE
DBCLIENT=$DBCLIENT
DB_MANAGER=$DB_MANAGER
EOF
  grep -v '^PG_BIN=\|^PG_OS_USER=' "$rig/env"
}

# ------------------------------------------------------------------------------------------------------- stop
stop() {
  local rig="${1:-${KATIB_RIG_DIR:-}}"
  [[ -n "$rig" && -f "$rig/env" ]] || die "stop: no rig at '${rig}' (give its directory or set KATIB_RIG_DIR)"
  local dbm_pid pg_pid pg_bin pg_user
  dbm_pid="$(sed -n 's/^KATIB_DB_MANAGER_PID=//p' "$rig/env")"
  pg_pid="$(sed -n 's/^POSTGRES_PID=//p' "$rig/env")"
  pg_bin="$(sed -n 's/^PG_BIN=//p' "$rig/env")"
  pg_user="$(sed -n 's/^PG_OS_USER=//p' "$rig/env")"
  end_pid "$dbm_pid"
  if [[ -n "$pg_pid" ]] && kill -0 "$pg_pid" 2>/dev/null; then
    PG_OS_USER="$pg_user"
    as_pg "$pg_bin/pg_ctl" -D "$rig/pgdata" -m fast -w -t 30 stop >/dev/null 2>&1 || end_pid "$pg_pid"
  fi
  case "$rig" in
    /tmp/katib-rig.*) [[ "${2:-}" == keep ]] || rm -rf "$rig" ;;
    *) log "left $rig in place (not created by this script)" ;;
  esac
  log "stopped"
}

case "${1:-}" in
  build)
    build
    echo "ORACLE=$ORACLE"
    echo "DBCLIENT=$DBCLIENT"
    echo "DB_MANAGER=$DB_MANAGER"
    ;;
  start) start ;;
  stop) stop "${2:-}" ;;
  *) die "usage: rig.sh build|start|stop [DIR]" ;;
esac
