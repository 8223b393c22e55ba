# Two brokers on one PostgreSQL database (as behind a load balancer): an
# agent on libvirt's test driver dials broker A; accounts, keys and VPS
# made through either broker are seen through the other, and a VPS made
# through B (which holds no agent) reaches the agent parked on A at once
# (LISTEN/NOTIFY) and runs. A key
# revoked through one broker is refused by the other at once (no cache
# of one broker hides the other's writes).
source "$(dirname "$0")/lib.sh"

start_postgres || fatal "PostgreSQL starts (scripts/start-postgres)"
ok "PostgreSQL starts (pid $PG_PID)"

# hold_ms 60000: a parked agent would wait a minute for a change made
# through the other broker; the broker holding it is told at once
# (LISTEN/NOTIFY, store_watch()), so it answers within seconds.
start_broker --db="$PG_URL" --hold_ms=60000 || fatal "broker A starts on PostgreSQL"
A_API=$API A_ADMIN=$ADMIN A_PID=$BROKER_PID
# observe_interval_ms 60000: an idle agent stays parked a minute too.
start_agent hv1 --observe_interval_ms=60000
wait_node_up hv1 || fatal "the agent joins broker A and its node is up"
pick_broker_ports || fatal "ports for broker B"
start_broker --db="$PG_URL" --hold_ms=60000 || fatal "broker B starts on the same database"
B_API=$API B_ADMIN=$ADMIN B_PID=$BROKER_PID
ok "brokers A (pid $A_PID) and B (pid $B_PID) share one database"
grep -q "postgresql://postgres@127.0.0.1" "$T/broker.log" && ok "the log names the database" ||
        not_ok "the log names the database"

on() { # on A|B: point api/ctl at that broker
        case $1 in A) API=$A_API ADMIN=$A_ADMIN ;; B) API=$B_API ADMIN=$B_ADMIN ;; esac
}

on B
eq "broker B sees the node that joined A" "$(node_field hv1 .state)" up
on A
K=$(new_account acme pro) || fatal "an account and a key made through A"
on B
KB=$(ctl key create acme 2>/dev/null | head -1) || fatal "a second key made through B"

SMALL='{"name":"%s","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
on A
KEY=$K api POST /v1/vps "$(printf "$SMALL" via-a)"
eq "POST /v1/vps through A -> 201" "$CODE" 201
VA=$(jget .data.id)
check "the VPS made through A runs" wait_status "$K" "$VA" running 20
sleep 1 # the agent has nothing left to do: parked on A for up to a minute
on B
KEY=$K api POST /v1/vps "$(printf "$SMALL" via-b)"
eq "POST /v1/vps through B (A's key) -> 201" "$CODE" 201
VB=$(jget .data.id)

on B
KEY=$KB api GET "/v1/vps/$VA"
eq "B shows the VPS made through A" "$CODE:$(jget .data.name)" 200:via-a
on A
KEY=$KB api GET "/v1/vps/$VB"
eq "A shows the VPS made through B (B's key)" "$CODE:$(jget .data.name)" 200:via-b
on A
check "the VPS made through B reaches the agent parked on A (NOTIFY) and runs within 8 s" \
        wait_status "$K" "$VB" running 8
on B
check "B shows it running too" wait_status "$K" "$VB" running 5
KEY=$K api GET /v1/vps
eq "B lists both" "$(jget '[.data[].name] | sort | join(",")')" via-a,via-b
on A
KEY=$K api GET /v1/vps
eq "A lists both" "$(jget '[.data[].name] | sort | join(",")')" via-a,via-b

# an action through A, seen through B; a delete through B, gone through A
on A
KEY=$K api POST "/v1/vps/$VB/actions" '{"action":"shutdown"}'
eq "shutdown through A -> 202" "$CODE" 202
on B
check "B shows it stopped" wait_status "$K" "$VB" stopped 20
KEY=$K api DELETE "/v1/vps/$VA"
match "DELETE through B -> 2xx" "$CODE" "^20[0-9]$"
on A
KEY=$K api GET "/v1/vps/$VA"
eq "A no longer shows it" "$CODE" 404

# a key revoked through B is refused by A at once
on B
KID=$(ctl --json key list acme | jq -r '.[] | select(.revoked_at == null or .revoked_at == 0) | .id' | tail -1)
ctl key revoke acme "$KID" >/dev/null 2>&1 || not_ok "key revoke through B"
on A
KEY=$KB api GET /v1/vps
eq "A refuses the key revoked through B" "$CODE" 401

# The database restarts under both brokers: their pooled connections are
# dead; each call's first statement finds that and connects again, so the
# first requests after it already answer; B's changes reach the agent on
# A again once A listens again.
PG_OLD=$PG_URL
stop_postgres
start_postgres || fatal "PostgreSQL starts again"
eq "it is back on its URL" "$PG_URL" "$PG_OLD"
on A
KEY=$K api GET "/v1/vps/$VB"
eq "A answers the first request after the restart" "$CODE" 200
on B
KEY=$K api POST "/v1/vps/$VB/actions" '{"action":"start"}'
eq "B takes a write at once after the restart -> 202" "$CODE" 202
check "the agent on A runs it again within 10 s (A listens again)" wait_status "$K" "$VB" running 10

# Both brokers stop; the agent's node is still known to a new one.
stop_pid "$B_PID"
ok "broker B stops; A carries on"
on A
KEY=$K api GET "/v1/vps/$VB"
eq "A answers after B is gone" "$CODE" 200
