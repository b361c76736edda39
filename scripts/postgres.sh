#!/usr/bin/env bash
# A throw-away PostgreSQL server, for the tests of `makemore tune` and for trying it out.
#
#   scripts/postgres.sh ensure-installed   install PostgreSQL from the Debian/Ubuntu packages if
#                                          it is missing (needs root or password-less sudo)
#   scripts/postgres.sh start              start a server on 127.0.0.1 and a free port, in a new
#                                          temp dir, with an empty database `makemore`; prints
#                                            MAKEMORE_PG_DIR=/tmp/makemore-pg.XXXXXX
#                                            MAKEMORE_PG_URL=postgresql://postgres@127.0.0.1:PORT/makemore
#   scripts/postgres.sh stop DIR           stop that server and delete DIR
#
# The server trusts every local connection and runs with fsync off: it is for tests only.
# initdb refuses to run as root, so as root the server runs as the `postgres` user (created
# by the Debian package; `makemore-pg` is created if it is missing).
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

ensure_installed() {
    local d
    if d=$(bindir); then say "found $d"; return 0; fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
        else say "PostgreSQL is not installed and this user can neither install packages nor sudo"; return 1; fi
    fi
    if ! command -v apt-get >/dev/null; then
        say "PostgreSQL is not installed and there is no apt-get here; install it (initdb, pg_ctl) by hand"
        return 1
    fi
    local t0=$SECONDS
    say "installing PostgreSQL: apt-get update && apt-get install postgresql"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    d=$(bindir) || { say "apt-get installed postgresql but no initdb was found"; return 1; }
    say "installed $d in $((SECONDS - t0)) s"
}

# Run a command as the unprivileged owner of the cluster (ourselves unless we are root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null; then runuser -u "$OWNER" -- "$@"
        else su -s /bin/sh "$OWNER" -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local bin root port try
    bin=$(bindir) || { say "PostgreSQL is not installed; run: $0 ensure-installed"; return 1; }
    root=$(mktemp -d "${MAKEMORE_PG_TMP:-/tmp}/makemore-pg.XXXXXX")
    OWNER=$(id -un)
    if [ "$(id -u)" = 0 ]; then
        OWNER=postgres
        if ! id "$OWNER" >/dev/null 2>&1; then
            OWNER=makemore-pg
            id "$OWNER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$OWNER"
        fi
        chown "$OWNER" "$root"
    fi
    if ! as_owner "$bin/initdb" -D "$root/data" -U postgres -A trust -E UTF8 --no-sync >"$root/initdb.log" 2>&1; then
        say "initdb failed:"; cat "$root/initdb.log" >&2; rm -rf "$root"; return 1
    fi
    for try in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        if as_owner "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
            -o "-h 127.0.0.1 -p $port -k $root -F" start >/dev/null; then
            as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres makemore
            say "server of $root listening on 127.0.0.1:$port"
            echo "MAKEMORE_PG_DIR=$root"
            echo "MAKEMORE_PG_URL=postgresql://postgres@127.0.0.1:$port/makemore"
            return 0
        fi
        say "start on port $port failed (try $try):"; tail -n 5 "$root/server.log" >&2 || true
    done
    rm -rf "$root"
    return 1
}

stop() {
    local root=${1:?usage: $0 stop DIR}
    case "$(basename "$root")" in makemore-pg.*) ;; *) say "$root is not a directory made by $0 start"; return 1;; esac
    [ -d "$root" ] || return 0
    local bin
    OWNER=$(stat -c %U "$root")
    if bin=$(bindir) && [ -f "$root/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$root/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$root"
}

case "${1:-}" in
    ensure-installed) ensure_installed ;;
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 ensure-installed | start | stop DIR" >&2; exit 2 ;;
esac
