# Sourced by tests/run.sh: a throwaway PostgreSQL cluster on 127.0.0.1 for one test run.
# start_postgres exports TEST_POSTGRES_URL; stop_postgres (run on exit) removes everything.

_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

_pg_as_owner() {
  # initdb and postgres refuse to run as root: run them as the postgres user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin port
  if ! bin=$(_pg_bin); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Installing PostgreSQL server packages (apt-get)..."
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
        >/dev/null 2>&1 || true
    fi
    bin=$(_pg_bin) || return 1
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then return 1; fi
  PG_DIR=$(mktemp -d /tmp/topup-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  _pg_as_owner "$bin/initdb" -D "$PG_DIR/data" --auth=trust -U postgres >"$PG_DIR/initdb.log" 2>&1 || return 1
  _pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$PG_DIR/server.log"; return 1; }
  PG_BIN=$bin
  _pg_as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres topup_test || return 1
  export TEST_POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:$port/topup_test"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port for this run"
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
  return 0
}
