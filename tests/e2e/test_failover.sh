# Agents with a list of brokers (broker=URL,URL): an agent joins the first,
# moves to the next as soon as its broker goes away (kill -9) and joins it
# with its full report (its guests appear there), moves back when that one
# dies in turn and the first is back, and starts on the second when the
# first is down from the start. Every listener answers /healthz and /readyz
# (what haproxy checks). The two brokers here share one SQLite file (WAL;
# no list or key caches) as a stand-in for PostgreSQL: what is tested is
# the agent's side; test_failover_pg runs brokers on PostgreSQL.
source "$(dirname "$0")/lib.sh"

free_port TILAA_PORT || fatal "a port"
start_broker --tilaa_listen="127.0.0.1:$TILAA_PORT" --list_cache=0 || fatal "broker a starts"
A_PID=$BROKER_PID A_AGENT=$AGENT_URL A_ADMIN=$ADMIN A_API=$API
A_DB=$T/broker.db
[ "${TASMAN_E2E_PG:-0}" = 1 ] && A_DB=$PG_URL # the same PostgreSQL database

for url in "$A_API" "$A_ADMIN" "http://127.0.0.1:$TILAA_PORT"; do
        eq "$url/healthz -> 200 ok" "$(curl -s -w ' %{http_code}' "$url/healthz")" '{"status":"ok"} 200'
        eq "$url/readyz -> 200 ready" "$(curl -s -w ' %{http_code}' "$url/readyz")" '{"status":"ready"} 200'
done
eq "HEAD /readyz -> 200" "$(curl -s -o /dev/null -I -w '%{http_code}' "$A_API/readyz")" 200
eq "POST /readyz -> 405" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$A_API/readyz")" 405

# Broker b: its own ports and file.
pick_broker_ports || fatal "ports for broker b"
B_AGENT=$AGENT_URL B_ADMIN=$ADMIN B_API=$API
mkdir -p "$T/b"
"$BUILD/tasman-broker" --db="$A_DB" --listen="127.0.0.1:$API_PORT" --admin_listen="127.0.0.1:$ADMIN_PORT" \
        --agent_listen="$B_AGENT" --rate_limits=0 --list_cache=0 >>"$T/broker-b.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
check "broker b starts" wait_for 30 "broker b" curl -fs "$B_ADMIN/readyz"
ADMIN=$A_ADMIN API=$A_API
export TASMAN_BROKER=$A_ADMIN

node_state() { curl -s "$1/v1/nodes/$2" | jq -r .data.state 2>/dev/null; }
node_on() { [ "$(node_state "$1" "$2")" = up ]; }

AGENT_URL="$A_AGENT,$B_AGENT"
start_agent hv1
check "the agent joins the first broker of its list" wait_for 20 "hv1 on a" node_on "$A_ADMIN" hv1
KA=$(new_account fo-a) || fatal "account on broker a"
KEY=$KA api POST /v1/vps '{"name":"web1","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "a VPS through broker a -> 201" "$CODE" 201
check "it runs" wait_status "$KA" "$(jget .data.id)" running

{ kill -9 "$A_PID"; wait "$A_PID"; } 2>/dev/null
t0=$(date +%s%N)
check "broker a killed: the agent joins broker b" wait_for 20 "hv1 on b" node_on "$B_ADMIN" hv1
echo "# moved in $((($(date +%s%N) - t0) / 1000000)) ms"
check "and reports its guest there (a full report: broker b sees its domain)" wait_for 10 "domains" \
        bash -c "[ \"\$(curl -s $B_ADMIN/v1/nodes/hv1 | jq -r .data.observed.domains)\" = 1 ]"
check "the agent says where it went" grep -q "moving to $B_AGENT" "$T/hv1.log"
check "and kept its guest (broker b wants it too)" bash -c "! grep -q 'vm 1: undefine' '$T/hv1.log'"
KEY=$KA API=$B_API api GET /v1/vps
eq "broker b shows the VPS running" "$(jget '.data[0].status')" running

# Broker a back (same file and ports), broker b killed: back to a.
ADMIN=$A_ADMIN API=$A_API AGENT_URL=$A_AGENT
"$BUILD/tasman-broker" --db="$A_DB" --listen="${A_API#http://}" --admin_listen="${A_ADMIN#http://}" \
        --agent_listen="$A_AGENT" --rate_limits=0 --list_cache=0 >>"$T/broker.log" 2>&1 &
A_PID=$!
PIDS+=("$A_PID")
check "broker a is back" wait_for 30 "broker a" curl -fs "$A_ADMIN/readyz"
{ kill -9 "$B_PID"; wait "$B_PID"; } 2>/dev/null
check "broker b killed: the agent is back on broker a" wait_for 20 "hv1 on a again" node_on "$A_ADMIN" hv1
KEY=$KA api GET /v1/vps
check "where its VPS still runs" wait_status "$KA" "$(jget '.data[0].id')" running

# A second agent whose first broker is down from the start.
AGENT_URL="$B_AGENT,$A_AGENT"
start_agent hv2
check "an agent whose first broker is down joins the next" wait_for 20 "hv2 on a" node_on "$A_ADMIN" hv2
stop_pid "${AGENT_PIDS[hv2]}"
t0=$(date +%s%N)
stop_pid "${AGENT_PIDS[hv1]}"
check "an agent stops within seconds of SIGTERM" [ $((($(date +%s%N) - t0) / 1000000)) -lt 5000 ]
"$BUILD/tasman-agent" --broker="a,,b" >"$T/bad.out" 2>&1
eq "a malformed broker list: exit 2" "$?" 2
check "it says what is wrong" grep -q "broker must be 1 to 8 URLs" "$T/bad.out"
