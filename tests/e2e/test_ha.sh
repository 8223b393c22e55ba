# Several brokers behind haproxy on PostgreSQL, one killed under load
# (issue 9's proof): PostgreSQL, two brokers, packaging/haproxy/haproxy.cfg
# in front (both brokers as servers), three agents on libvirt's test driver
# dialing haproxy's agent port, and a client creating and deleting VPS
# through haproxy as fast as it can (each request with an Idempotency-Key,
# retried with the same key when the answer is not a success). Broker A is
# killed (-9) in the middle. Checked: every creation answered 201 exists
# exactly once and every answered delete is gone; the agents are served by
# the survivor within 5 s; no host is overbooked; the rate limit still
# holds (a burst gets 429s: at most the tier's burst per broker, the
# documented bound); invoicing of the days missed ran once across the two
# brokers; the killed broker restarts and serves again.
source "$(dirname "$0")/lib.sh"

command -v haproxy >/dev/null || fatal "haproxy is not installed (scripts/install-deps installs it)"
command -v psql >/dev/null || fatal "psql is not installed (scripts/install-deps installs postgresql)"
start_postgres || fatal "PostgreSQL starts (scripts/start-postgres)"
ok "PostgreSQL starts"
pg() { psql -q -At -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }

BROKER_ARGS=(--db="$PG_URL" --rate_limits=1 --billing=1 --list_cache=0)
start_broker "${BROKER_ARGS[@]}" || fatal "broker A starts"
A_PID=$BROKER_PID A_API_PORT=$API_PORT A_ADMIN=$ADMIN A_AGENT_PORT=$AGENT_PORT A_ADMIN_PORT=$ADMIN_PORT
# Three services billed before "the brokers went down": an agent of its
# own, three VPS, then broker and agent stop.
start_agent hv0
wait_node_up hv0 || fatal "agent hv0 joins"
ctl account create ha-load --tier enterprise >/dev/null || fatal "account"
K=$(ctl key create ha-load 2>/dev/null | head -1)
ctl credit add ha-load 1000 >/dev/null || fatal "credit"
for i in 1 2 3; do
        KEY=$K api POST /v1/vps "{\"name\":\"billed$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"ubuntu-24.04\"}"
        [ "$CODE" = 201 ] || fatal "billed VPS $i: $CODE $BODY"
        jget .data.id >>"$T/billed"
done
stop_pid "${AGENT_PIDS[hv0]}"
stop_pid "$A_PID"
# Two midnights missed while down: the day before yesterday is the last
# invoiced, and the three existed all along. Both brokers then start at
# once, and each catches up: each day must be invoiced once.
DAY=$(pg "SELECT value FROM meta WHERE key = 'billing_day'")
[ -n "$DAY" ] || fatal "billing_day recorded at the first start"
pg "UPDATE meta SET value = $((DAY - 2)) WHERE key = 'billing_day'" || fatal "set billing_day back"
pg "UPDATE billable SET created_at = created_at - 3 * 86400000" || fatal "backdate the services"
BAL0=$(pg "SELECT credit_cents FROM accounts WHERE name = 'ha-load'")

AGENT_URL=tcp://127.0.0.1:$A_AGENT_PORT
"$BUILD/tasman-broker" "${BROKER_ARGS[@]}" --listen="127.0.0.1:$A_API_PORT" --admin_listen="127.0.0.1:$A_ADMIN_PORT" \
        --agent_listen="tcp://127.0.0.1:$A_AGENT_PORT" --host_timeout_ms=10000 >>"$T/broker.log" 2>&1 &
A_PID=$!
PIDS+=("$A_PID")
pick_broker_ports || fatal "ports for broker B"
B_API_PORT=$API_PORT B_ADMIN=$ADMIN B_AGENT_PORT=$AGENT_PORT B_ADMIN_PORT=$ADMIN_PORT
"$BUILD/tasman-broker" "${BROKER_ARGS[@]}" --listen="127.0.0.1:$B_API_PORT" --admin_listen="127.0.0.1:$B_ADMIN_PORT" \
        --agent_listen="tcp://127.0.0.1:$B_AGENT_PORT" --host_timeout_ms=10000 >>"$T/broker-b.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
check "broker A restarts" wait_for 30 "A ready" curl -fs "$A_ADMIN/readyz"
check "broker B starts on the same database at the same time" wait_for 30 "B ready" curl -fs "$B_ADMIN/readyz"
ADMIN=$B_ADMIN
export TASMAN_BROKER=$B_ADMIN

# haproxy: the example, its one server line per backend made two.
free_port LB_API && free_port LB_AGENT && free_port LB_TILAA && free_port LB_ADMIN || fatal "free ports"
awk -v a_api="127.0.0.1:$A_API_PORT" -v b_api="127.0.0.1:$B_API_PORT" \
    -v a_ag="127.0.0.1:$A_AGENT_PORT" -v b_ag="127.0.0.1:$B_AGENT_PORT" \
    -v a_adm="127.0.0.1:$A_ADMIN_PORT" -v b_adm="127.0.0.1:$B_ADMIN_PORT" '
        /server broker1 127.0.0.1:8080 / { sub("127.0.0.1:8080", a_api); print; l = $0; sub("broker1 " a_api, "broker2 " b_api, l); print l; next }
        /server broker1 127.0.0.1:7400 / { sub("127.0.0.1:7400", a_ag); print; l = $0; sub("broker1 " a_ag, "broker2 " b_ag, l); print l; next }
        /server broker1 127.0.0.1:8081 / { sub("127.0.0.1:8081", a_adm); print; l = $0; sub("broker1 " a_adm, "broker2 " b_adm, l); print l; next }
        /server broker1 127.0.0.1:8082 / { next } # no Tilaa listener here
        { print }' "$ROOT/packaging/haproxy/haproxy.cfg" |
        sed -e "s/127.0.0.1:18080/127.0.0.1:$LB_API/; s/127.0.0.1:17400/127.0.0.1:$LB_AGENT/" \
            -e "s/127.0.0.1:18082/127.0.0.1:$LB_TILAA/; s/127.0.0.1:18081/127.0.0.1:$LB_ADMIN/" \
            -e "s/inter 2s fall 2 rise 2/inter 500ms fall 2 rise 2/" >"$T/haproxy.cfg"
check "haproxy's config (two brokers) is valid" haproxy -c -q -f "$T/haproxy.cfg"
haproxy -f "$T/haproxy.cfg" >>"$T/haproxy.log" 2>&1 &
PIDS+=($!)
LB=http://127.0.0.1:$LB_API
check "haproxy serves" wait_for 15 "haproxy" curl -fs "$LB/readyz"

AGENT_URL=tcp://127.0.0.1:$LB_AGENT
for h in hv1 hv2 hv3; do start_agent "$h" --vcpus=64 --ram_mb=262144 --disk_gb=10000 --observe_interval_ms=1000; done
for h in hv1 hv2 hv3; do check "agent $h joins through haproxy" wait_node_up "$h"; done
ctl credit add ha-load 10000 >/dev/null || fatal "credit for the load"

# --- the load: create, and delete every other one, for LOAD_S seconds; A
# dies after KILL_AT seconds.
LOAD_S=${LOAD_S:-12} KILL_AT=${KILL_AT:-5}
client() {
        local end=$((SECONDS + LOAD_S)) i=0 code key body id tries
        while [ $SECONDS -lt $end ]; do
                i=$((i + 1))
                key=ha-$$-$i
                body=$(printf '{"name":"ha%d","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}' "$i")
                for tries in 1 2 3 4 5 6 7 8 9 10; do
                        code=$(curl -s -m 10 -o "$T/c.json" -w '%{http_code}' -X POST "$LB/v1/vps" \
                                -H "Authorization: Bearer $K" -H 'Content-Type: application/json' \
                                -H "Idempotency-Key: $key" --data-binary "$body")
                        [ "$code" = 201 ] && break
                        echo "retry $i $code" >>"$T/client.retries"
                        sleep 0.2
                done
                [ "$code" = 201 ] || { echo "create $i failed: $code" >>"$T/client.errors"; continue; }
                id=$(jq -r .data.id "$T/c.json")
                echo "$id" >>"$T/created"
                if [ $((i % 2)) -eq 0 ]; then
                        for tries in 1 2 3 4 5 6 7 8 9 10; do
                                code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X DELETE "$LB/v1/vps/$id" \
                                        -H "Authorization: Bearer $K")
                                case $code in 204 | 404) break ;; esac
                                sleep 0.2
                        done
                        case $code in 204 | 404) echo "$id" >>"$T/deleted" ;; *) echo "delete $id: $code" >>"$T/client.errors" ;; esac
                fi
        done
}
: >"$T/created"; : >"$T/deleted"
client &
CLIENT=$!
sleep "$KILL_AT"
{ kill -9 "$A_PID"; wait "$A_PID"; } 2>/dev/null
KILLED=$(date +%s%N)
ok "broker A killed (-9) under load"
# Every agent is served by B within 5 s: B's hub touches the hosts it
# serves at least every second (a tenth of host_timeout_ms).
served() {
        local h seen now
        now=$(date +%s)
        for h in hv1 hv2 hv3; do
                seen=$(curl -s "$B_ADMIN/v1/nodes/$h" | jq -r .data.last_seen_age_ms)
                [ -n "$seen" ] && [ "$seen" != null ] && [ "$seen" -lt 1500 ] || return 1
        done
}
# (a last_seen written by A before it died stays fresh for 1.5 s: look
# after that, so each fresh one was written since, through B)
sleep 1.6
check "the agents are served by broker B within 5 s" wait_for 4 "agents on B" served
echo "# agents served by B $((($(date +%s%N) - KILLED) / 1000000)) ms after the kill"
wait "$CLIENT"
NC=$(wc -l <"$T/created") ND=$(wc -l <"$T/deleted")
echo "# $NC created, $ND deleted, $(cat "$T/client.retries" 2>/dev/null | wc -l) retries"
check "the client made VPS on both sides of the kill" [ "$NC" -ge 4 ]
check "no creation failed for good" bash -c "[ ! -s '$T/client.errors' ] || { sed 's/^/# /' '$T/client.errors'; false; }"
eq "every 201 is a different VPS" "$(sort "$T/created" | uniq -d | wc -l)" 0
API=http://127.0.0.1:$B_API_PORT
ids=""
cursor=""
for _ in $(seq 1 100); do
        KEY=$K api GET "/v1/vps?limit=100${cursor:+&cursor=$cursor}"
        ids="$ids $(jget '.data[].id')"
        cursor=$(jget '.next_cursor // empty')
        [ -n "$cursor" ] || break
done
tr ' ' '\n' <<<"$ids" | grep . | sort >"$T/live"
sort -u "$T/created" >"$T/c.sorted"
sort -u "$T/deleted" >"$T/d.sorted"
{ comm -23 "$T/c.sorted" "$T/d.sorted"; cat "$T/billed"; } | sort >"$T/want"
eq "the live VPS are exactly those created and not deleted" "$(diff "$T/want" "$T/live" | wc -l)" 0
eq "each exactly once in the store" "$(pg "SELECT count(*) FROM (SELECT v.name FROM vms v JOIN accounts a ON a.id = v.account_id WHERE a.name = 'ha-load' AND v.deleted_at IS NULL GROUP BY v.name HAVING count(*) > 1) d")" 0
eq "no host overbooked (reserved within capacity)" \
        "$(pg "SELECT count(*) FROM hosts WHERE vcpus_used > vcpus * 4 OR ram_mb_used > ram_mb OR disk_gb_used > disk_gb")" 0
eq "each host's reservations are its VPS's" \
        "$(pg "SELECT count(*) FROM hosts h WHERE ram_mb_used <> (SELECT COALESCE(SUM(ram_mb), 0) FROM vms v WHERE v.host_id = h.id AND v.deleted_at IS NULL)")" 0
# The rate limit with a broker gone: a free key's burst of 30 through haproxy.
ctl account create ha-free --tier free >/dev/null || fatal "free account"
KF=$(ctl key create ha-free 2>/dev/null | head -1)
n200=0 n429=0
for _ in $(seq 1 30); do
        case $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KF" "$LB/v1/vps") in
                200) n200=$((n200 + 1)) ;; 429) n429=$((n429 + 1)) ;;
        esac
done
echo "# free key, 30 requests: $n200 answered, $n429 limited"
check "the rate limit holds: past the burst, 429 (bound: the burst per live broker)" [ "$n429" -ge 10 ] && [ "$n200" -le 12 ]
# Invoicing: the two missed days, once each, whichever broker ran them.
eq "the missed days were invoiced (billing_day caught up)" \
        "$(pg "SELECT value FROM meta WHERE key = 'billing_day'")" "$DAY"
eq "once across the two brokers: 3 services x 2 days = 6 invoice lines" \
        "$(pg "SELECT count(*) FROM invoice_lines WHERE day IN ($((DAY - 1)), $DAY)")" 6
eq "no service invoiced twice for a day" "$(pg "SELECT count(*) FROM (SELECT vm_id, day FROM invoice_lines GROUP BY 1, 2 HAVING count(*) > 1) d")" 0
eq "the credit was drawn once (6 x EUR 0.20)" "$(pg "SELECT credit_cents FROM accounts WHERE name = 'ha-load'")" \
        "$((BAL0 + 1000000 - 6 * 20))"

# The killed broker back: it serves again, and haproxy sends to it.
"$BUILD/tasman-broker" "${BROKER_ARGS[@]}" --listen="127.0.0.1:$A_API_PORT" --admin_listen="127.0.0.1:$A_ADMIN_PORT" \
        --agent_listen="tcp://127.0.0.1:$A_AGENT_PORT" --host_timeout_ms=10000 >>"$T/broker.log" 2>&1 &
A_PID=$!
PIDS+=("$A_PID")
check "broker A restarts and is ready" wait_for 30 "A ready" curl -fs "$A_ADMIN/readyz"
API=http://127.0.0.1:$A_API_PORT
KEY=$K api GET "/v1/vps?limit=1"
eq "broker A serves again" "$CODE" 200
check "haproxy has both brokers in service again" wait_for 10 "both up" \
        bash -c "[ \"\$(for i in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null -w '%{http_code}\n' $LB/readyz; done | sort -u)\" = 200 ]"
