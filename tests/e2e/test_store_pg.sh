# The store's unit test suites (test_store, test_billing_store) on PostgreSQL: a server of
# this test's own (scripts/start-postgres in the test's directory, on a
# unix socket there and a free loopback port), each test on a database of
# its own (TASMAN_TEST_PG). Its TAP lines pass through; the tests of
# SQLite's files say "# skip" and why. If PostgreSQL cannot start, this
# fails: it never skips.
source "$(dirname "$0")/lib.sh"

start_postgres || fatal "PostgreSQL starts (scripts/start-postgres)"
URL=$PG_URL
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
