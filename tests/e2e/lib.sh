# Shared helpers for the end-to-end tests (sourced, bash).
#
# Each test gets its own directory, ports, broker and agents, and stops
# only the processes it started (by pid) when it exits. Results are TAP
# lines: "ok - what" / "not ok - what" (tests/run counts them).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
T=$(mktemp -d /tmp/tasman-e2e.XXXXXX)
PIDS=()
FAILS=0
CLEANUPS=()

cleanup() {
        local f
        # Our processes first: an agent still running would make again the
        # domains a cleanup removes.
        for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
        for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
        for f in "${CLEANUPS[@]+"${CLEANUPS[@]}"}"; do $f || true; done
        # Sanitizer reports of the daemons land in their logs: a report is a failure.
        if grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$T"/*.log 2>/dev/null; then
                not_ok "sanitizer report in daemon logs (see above files)"
        else
                ok "no sanitizer report in daemon logs"
        fi
        if [ "$FAILS" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$T"; else echo "# kept $T"; fi
}
trap cleanup EXIT

ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; FAILS=$((FAILS + 1)); }
# check DESC CMD...: ok if the command succeeds
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# eq DESC GOT WANT
eq() {
        if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1 (got '$2', want '$3')"; fi
}
# fatal DESC: stop the test here (the runner counts the failure)
fatal() { not_ok "$*"; exit 1; }

# free_port VAR: set VAR to a TCP port no socket uses, below the kernel's ephemeral range
# (so a client's outgoing connection cannot take it between the pick and
# the bind) and not handed out before by this test (bounded tries).
USED_PORTS=" "
free_port() {
        local var=$1 i p lo
        lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
        [ "$lo" -gt 21000 ] 2>/dev/null || lo=32768
        for i in $(seq 1 200); do
                p=$((20000 + RANDOM % (lo - 20000)))
                case $USED_PORTS in *" $p "*) continue ;; esac
                if ! ss -Htan "sport = :$p" | grep -q .; then
                        USED_PORTS="$USED_PORTS$p "
                        printf -v "$var" %s "$p"
                        return 0
                fi
        done
        return 1
}

pick_broker_ports() {
        free_port API_PORT && free_port ADMIN_PORT && free_port AGENT_PORT || return 1
        API=http://127.0.0.1:$API_PORT
        ADMIN=http://127.0.0.1:$ADMIN_PORT
        AGENT_URL=tcp://127.0.0.1:$AGENT_PORT
        export TASMAN_BROKER=$ADMIN
}
pick_broker_ports

# start_broker [--key=value ...]: start a broker and wait until it answers.
# Rate limits are off (the tests poll faster than any tier allows) unless
# RATE_LIMITS=1, as test_rate_limits sets.
# A broker that exits at once because another process took one of its
# ports between the pick and the bind is started again on fresh ports,
# unless agents already dial the old ones (a restart keeps its ports).
BROKER_PID=
BROKER_STARTS=0
# TASMAN_E2E_PG=1: the broker's database is PostgreSQL (a server of the
# test's own, started at the first start_broker) instead of a SQLite file.
start_broker() {
        local try end mark db=$T/broker.db
        if [ "${TASMAN_E2E_PG:-0}" = 1 ]; then
                [ -n "${PG_URL:-}" ] || start_postgres || return 1
                db=$PG_URL
        fi
        for try in 1 2 3 4 5; do
                mark=$(cat "$T/broker.log" 2>/dev/null | wc -c)
                "$BUILD/tasman-broker" --db="$db" --listen="127.0.0.1:$API_PORT" \
                        --admin_listen="127.0.0.1:$ADMIN_PORT" --agent_listen="$AGENT_URL" \
                        --host_timeout_ms="${HOST_TIMEOUT_MS:-10000}" \
                        --rate_limits="${RATE_LIMITS:-0}" "$@" >>"$T/broker.log" 2>&1 &
                BROKER_PID=$!
                PIDS+=("$BROKER_PID")
                end=$((SECONDS + 30))
                while [ $SECONDS -lt $end ]; do
                        if curl -fs "$ADMIN/v1/accounts" -o /dev/null 2>&1; then
                                BROKER_STARTS=$((BROKER_STARTS + 1))
                                local_catalog
                                return
                        fi
                        kill -0 "$BROKER_PID" 2>/dev/null || break
                        sleep 0.05
                done
                if kill -0 "$BROKER_PID" 2>/dev/null; then
                        echo "# broker (pid $BROKER_PID) does not answer after 30 s; its log:"
                        tail -c +"$((mark + 1))" "$T/broker.log" | tail -n 20 | sed 's/^/#   /'
                        return 1
                fi
                wait "$BROKER_PID" 2>/dev/null
                echo "# broker exited at start; its log:"
                tail -c +"$((mark + 1))" "$T/broker.log" | tail -n 5 | sed 's/^/#   /'
                if [ "$BROKER_STARTS" -gt 0 ] || ! tail -c +"$((mark + 1))" "$T/broker.log" | grep -q "Address already in use"; then
                        return 1
                fi
                pick_broker_ports
        done
        return 1
}

# broker_sql SQL: a query on the broker's database behind its back (the
# SQLite file, or PostgreSQL with TASMAN_E2E_PG=1; SQL both understand),
# rows as lines, columns split by |.
broker_sql() {
        if [ "${TASMAN_E2E_PG:-0}" = 1 ]; then
                psql -X -q -tA -F'|' -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"
        else
                sqlite3 -cmd ".timeout 5000" "$T/broker.db" "$1"
        fi
}

# start_postgres: a PostgreSQL server of this test's own in $T/pg
# (scripts/start-postgres: a unix socket there and a free loopback port);
# sets PG_URL and PG_PID, stopped by pid at exit. Fails (returns 1, saying
# why) if the server cannot start: callers make that fatal, never a skip.
PG_PID=
start_postgres() {
        # As root the server runs as user postgres: it must reach its
        # directory inside the test's (mktemp -d makes it 0700).
        chmod 0711 "$T"
        PG_URL=$("$ROOT/scripts/start-postgres" "$T/pg" 2>"$T/start-postgres.err") ||
                { sed 's/^/# /' "$T/start-postgres.err"; return 1; }
        PG_PID=$(head -1 "$T/pg/data/postmaster.pid")
        CLEANUPS+=(stop_postgres)
}
stop_postgres() {
        [ -n "$PG_PID" ] || return 0
        kill -INT "$PG_PID" 2>/dev/null || return 0
        local i
        for i in $(seq 1 100); do
                kill -0 "$PG_PID" 2>/dev/null || return 0
                sleep 0.1
        done
        echo "# PostgreSQL $PG_PID did not stop in 10 s: killed"
        kill -KILL "$PG_PID" 2>/dev/null || true
}

# start_agent NAME [--key=value ...]: an agent on libvirt's test driver
declare -A AGENT_PIDS=()
# No test may fetch anything from outside this machine: the default
# catalog's images (Canonical's) are replaced by small local files, and
# debian-12 is added the same way. Each file starts with a line naming it,
# which a guest prints when it reads its disk.
local_catalog() {
        local slug img sha
        for slug in ubuntu-24.04 debian-12; do
                img=$T/catalog/$slug.raw
                if [ ! -f "$img" ]; then
                        mkdir -p "$T/catalog"
                        printf 'TASMAN-TEST-IMAGE %s\n' "$slug" >"$img"
                        truncate -s 1M "$img"
                fi
                [ "$(ctl --json image list | jq -r ".[] | select(.slug == \"$slug\") | .url")" = "file://$img" ] &&
                        continue
                ctl image remove "$slug" >/dev/null 2>&1
                sha=$(sha256sum "$img" | cut -d' ' -f1)
                ctl image add "$slug" --name "$slug (test stand-in)" --url "file://$img" \
                        --sha256 "$sha" --format raw >/dev/null || { echo "# cannot set up the local catalog"; return 1; }
        done
}

start_agent() {
        local name=$1; shift
        mkdir -p "$T/$name"
        "$BUILD/tasman-agent" --broker="$AGENT_URL" --libvirt_uri=test:///default --manage_network=0 \
                --host_id="$name" --state_dir="$T/$name" --vcpus=64 --ram_mb=262144 \
                --disk_gb=10000 "$@" >>"$T/$name.log" 2>&1 &
        AGENT_PIDS[$name]=$!
        PIDS+=("$!")
}

stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }

# wait_for SECONDS DESC CMD...: poll CMD every 50 ms until it succeeds
wait_for() {
        local limit=$1 desc=$2; shift 2
        local end=$((SECONDS + limit))
        while [ $SECONDS -lt $end ]; do
                if "$@" >/dev/null 2>&1; then return 0; fi
                sleep 0.05
        done
        echo "# timed out after ${limit}s waiting for: $desc"
        return 1
}

# api METHOD PATH [JSON] -> sets CODE and BODY (uses $KEY if set)
# Extra request headers: H=("Name: value" ...); response headers land in
# HEADERS (hdr NAME reads one).
H=()
api() {
        local m=$1 p=$2 data=${3-} h
        local args=(-s -o "$T/body" -D "$T/headers" -w '%{http_code}' -X "$m")
        [ -n "${KEY:-}" ] && args+=(-H "Authorization: Bearer $KEY")
        [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
        for h in "${H[@]+"${H[@]}"}"; do args+=(-H "$h"); done
        rm -f "$T/body" # curl writes no file for an empty body
        CODE=$(curl "${args[@]}" "$API$p")
        BODY=$(cat "$T/body" 2>/dev/null)
        HEADERS=$(tr -d '\r' <"$T/headers")
}
hdr() { awk -v n="$(tr 'A-Z' 'a-z' <<<"$1")" -F': ' 'tolower($1) == n {print $2}' <<<"$HEADERS" | tail -1; }
jget() { jq -r "$1" <<<"$BODY"; }

ctl() { "$BUILD/tasmanctl" --broker "$ADMIN" "$@"; }

# new_account NAME -> prints a fresh API key for it
new_account() {
        ctl account create "$1" --tier "${2:-pro}" >/dev/null || return 1
        ctl key create "$1" 2>/dev/null | head -1
}

vps_status() { KEY=$1 api GET "/v1/vps/$2"; jget .data.status; }
# wait_status KEY ID STATUS [SECONDS]
wait_status() {
        local end=$((SECONDS + ${4:-20})) s=
        while [ $SECONDS -lt $end ]; do
                s=$(vps_status "$1" "$2")
                [ "$s" == "$3" ] && return 0
                sleep 0.05
        done
        echo "# vps $2: status '$s', waited for '$3'"
        return 1
}

# wait_snap KEY VPS SNAP STATUS [SECONDS]: the snapshot's status (404: "gone")
wait_snap() {
        local end=$((SECONDS + ${5:-30})) s=
        while [ $SECONDS -lt $end ]; do
                KEY=$1 api GET "/v1/vps/$2/snapshots/$3"
                if [ "$CODE" == 404 ]; then s=gone; else s=$(jget .data.status); fi
                [ "$s" == "$4" ] && return 0
                sleep 0.05
        done
        echo "# snapshot $3 of vps $2: status '$s', waited for '$4'"
        return 1
}

# Waits until the broker has the node up (an agent that just started may
# not have joined yet).
wait_node_up() { wait_for "${2:-20}" "node $1 up" bash -c "[ \"\$($BUILD/tasmanctl --broker $ADMIN --json node list | jq -r '.[] | select(.host == \"$1\") | .state')\" = up ]"; }
node_field() { ctl --json node list | jq -r ".[] | select(.host == \"$1\") | $2"; }
# match DESC STRING REGEX
match() { if [[ "$2" =~ $3 ]]; then ok "$1"; else not_ok "$1 ('$2' !~ $3)"; fi; }
