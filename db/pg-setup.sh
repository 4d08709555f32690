#!/usr/bin/env bash
# Prepares a local PostgreSQL for the controller and its tests: installs
# Debian's postgresql when missing, starts its cluster with pg_ctlcluster when
# it is not running (there may be no systemd), and gives the user running this
# script (root under `make setup`) a role that may create databases. That role
# logs in by peer authentication over the unix socket, without a password:
#   postgresql+psycopg:///DBNAME
# Idempotent and quick when all is in place; run as root.
set -euo pipefail

say() { echo "pg-setup: $*"; }
die() { echo "pg-setup: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it may install packages and start the server)"

# The newest major version installed, or nothing.
installed_major() {
    local v
    v=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null \
        | awk -F/ '{print $5}' | sort -n | tail -n 1)
    echo "${v:-}"
}

major=$(installed_major)
if [[ -z $major ]] || ! command -v pg_ctlcluster >/dev/null; then
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql
    major=$(installed_major)
    [[ -n $major ]] || die "postgresql installed, but no server binary under /usr/lib/postgresql"
fi

# The package creates a cluster named main; make one if it is missing.
cluster=main
if ! pg_lsclusters -h | awk -v v="$major" -v c="$cluster" '$1 == v && $2 == c {f=1} END {exit !f}'; then
    say "creating cluster $major/$cluster"
    pg_createcluster "$major" "$cluster"
fi

status=$(pg_lsclusters -h | awk -v v="$major" -v c="$cluster" '$1 == v && $2 == c {print $4}')
if [[ $status != online* ]]; then
    say "starting cluster $major/$cluster"
    # pg_ctlcluster waits until the server accepts connections. Right after a
    # server was killed, its processes may linger for a moment and hold the
    # socket's lock file: try again a few times.
    for try in 1 2 3 4 5; do
        pg_ctlcluster "$major" "$cluster" start && break
        ((try < 5)) || die "cluster $major/$cluster did not start; see its log under /var/log/postgresql"
        sleep 2
    done
fi
port=$(pg_lsclusters -h | awk -v v="$major" -v c="$cluster" '$1 == v && $2 == c {print $3}')

as_postgres() { runuser -u postgres -- "$@"; }
psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres -tA "$@"; }

user=$(id -un)
has=$(psql_admin -c "SELECT rolcreatedb FROM pg_roles WHERE rolname = '$user'")
if [[ -z $has ]]; then
    say "creating role $user (CREATEDB, peer authentication)"
    psql_admin -c "CREATE ROLE \"$user\" LOGIN CREATEDB"
elif [[ $has != t ]]; then
    say "letting role $user create databases"
    psql_admin -c "ALTER ROLE \"$user\" CREATEDB"
fi

# Test databases are dropped WITH (FORCE), which also ends the autovacuum
# workers busy in them; ending a process of another role takes
# pg_signal_backend (never a superuser's process).
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = '$user' AND g.rolname = 'pg_signal_backend'") ]]; then
    say "letting role $user end the sessions in its test databases (pg_signal_backend)"
    psql_admin -c "GRANT pg_signal_backend TO \"$user\""
fi

# Peer authentication maps the OS user to the role of the same name; a
# database of that name makes plain `psql` work too.
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$user'") ]]; then
    as_postgres createdb -p "$port" -O "$user" "$user"
fi
