# The store's unit test suites (test_store, test_billing_store) on PostgreSQL: a server of
# this test's own (scripts/start-postgres in the test's directory, on a
# unix socket there and a free loopback port), each test on a database of
# its own (TASMAN_TEST_PG). Its TAP lines pass through; the tests of
# SQLite's files say "# skip" and why. If PostgreSQL cannot start, this
# fails: it never skips.
source "$(dirname "$0")/lib.sh"

PGDIR=$T/pg
PG_PID=
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
CLEANUPS+=(stop_postgres)

# The server runs as user postgres when this runs as root: it must reach
# its directory inside the test's (mktemp -d makes it 0700).
chmod 0711 "$T"
URL=$("$ROOT/scripts/start-postgres" "$PGDIR" 2>"$T/start-postgres.err") ||
        { sed 's/^/# /' "$T/start-postgres.err"; fatal "PostgreSQL starts (scripts/start-postgres)"; }
PG_PID=$(head -1 "$PGDIR/data/postmaster.pid")
ok "PostgreSQL starts (pid $PG_PID, $URL)"

run_suite() {
        local bin=$1 rc
        [ -x "$bin" ] || { not_ok "$(basename "$bin") is built"; return; }
        TASMAN_TEST_PG=$URL CMOCKA_MESSAGE_OUTPUT=TAP "$bin" >"$T/$(basename "$bin").tap" \
                2>"$T/$(basename "$bin").log"
        rc=$?
        # its TAP lines, as they are (numbered: the runner counts them)
        grep -E '^(ok|not ok|# skip)' "$T/$(basename "$bin").tap"
        if [ "$rc" -ne 0 ]; then
                grep -E '^# ' "$T/$(basename "$bin").tap" | grep -v '^# skip' | head -20
                tail -20 "$T/$(basename "$bin").log" | sed 's/^/# /'
                not_ok "$(basename "$bin") on PostgreSQL exits 0 (status $rc)"
        else
                ok "$(basename "$bin") on PostgreSQL exits 0"
        fi
}
run_suite "$BUILD/tests/test_store"
run_suite "$BUILD/tests/test_billing_store"

# Each test dropped its database.
left=$(psql -X -tA "$URL" -c "SELECT COUNT(*) FROM pg_database WHERE datname LIKE 'tasman_test_%'")
eq "every test's database is dropped" "$left" 0
