#!/usr/bin/env bash
# Start Debian's PostgreSQL (installed by .ci/run) and make a role and database for the tests of
# a Dagster instance stored there; prints the URL the tests read from TEXTOPS_TEST_POSTGRES, and
# nothing else on stdout (what the server's tools say goes to stderr).
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
  as_postgres() { su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; }
else
  as_root() { sudo "$@"; }
  as_postgres() { sudo -u postgres "$@"; }
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -1)
if [ "$status" != "online" ]; then
  as_root pg_ctlcluster "$version" "$cluster" start >&2
fi
as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'textops'" | grep -q 1 \
  || as_postgres psql -qc "CREATE ROLE textops LOGIN PASSWORD 'textops' CREATEDB" >&2
echo "postgresql://textops:textops@127.0.0.1:${port}/postgres"
