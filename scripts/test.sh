#!/usr/bin/env bash
# Set up (scripts/setup.sh), start a private PostgreSQL for the store tests, run lint,
# type checks and the test suite. Used by the README and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# A throwaway PostgreSQL cluster on a free localhost port, removed on exit.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "${pg_bin}" ] && [ -z "${VLNODE_TEST_POSTGRES_URL:-}" ]; then
    pg_dir=$(mktemp -d /tmp/vlnode-pg.XXXXXX)
    pg_port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    run_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "${pg_dir}"
        run_pg=(runuser -u postgres --)
    fi
    "${run_pg[@]}" "${pg_bin}/initdb" -D "${pg_dir}/data" -U vlnode --auth=trust >/dev/null
    "${run_pg[@]}" "${pg_bin}/pg_ctl" -D "${pg_dir}/data" -l "${pg_dir}/log" -w \
        -o "-p ${pg_port} -k ${pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    trap '"${run_pg[@]}" "${pg_bin}/pg_ctl" -D "${pg_dir}/data" -m immediate stop >/dev/null 2>&1; rm -rf "${pg_dir}"' EXIT
    export VLNODE_TEST_POSTGRES_URL="postgresql+psycopg://vlnode@127.0.0.1:${pg_port}/postgres"
    echo "test: PostgreSQL on 127.0.0.1:${pg_port}"
fi

# In CI a missing peer (dcmtk, PostgreSQL, ...) fails instead of skipping.
export VLNODE_REQUIRE_PEERS="${VLNODE_REQUIRE_PEERS:-1}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
