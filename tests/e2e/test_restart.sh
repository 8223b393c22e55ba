# Crashes and restarts on libvirt's test driver: kill -9 of the agent while
# VPS are being created, kill -9 and restart of the broker. Nothing lost,
# nothing duplicated, everything reconverges.
source "$(dirname "$0")/lib.sh"

start_broker || fatal "broker starts"
start_agent hv1
K=$(new_account crash) || fatal "account"
domains() { node_field hv1 .observed.domains; }

# Create 30 VPS; kill -9 the agent after the 10th.
IDS=()
for i in $(seq 1 30); do
        KEY=$K api POST /v1/vps "{\"name\":\"c$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}"
        [ "$CODE" == 201 ] && IDS+=("$(jget .data.id)")
        if [ "$i" -eq 10 ]; then kill -9 "${AGENT_PIDS[hv1]}"; wait "${AGENT_PIDS[hv1]}" 2>/dev/null; fi
done
eq "30 creations accepted while the agent died" "${#IDS[@]}" 30
# Delete five while the agent is down.
for i in 0 1 2 3 4; do KEY=$K api DELETE "/v1/vps/${IDS[$i]}"; done
eq "delete while the agent is down -> 204" "$CODE" 204
start_agent hv1
all_running() {
        local id
        for id in "${IDS[@]:5}"; do [ "$(vps_status "$K" "$id")" == running ] || return 1; done
}
check "agent restarted: the 25 remaining VPS run" wait_for 30 "25 running" all_running
check "agent restarted: exactly 25 domains, no duplicate or leaked one" wait_for 10 "25 domains" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '.[0].observed.domains')\" == 25 ]"
KEY=$K api GET /v1/vps
eq "the list holds 25" "$(jget '.data | length')" 25

# Broker: kill -9, restart on the same database.
before=$(jq -c '[.data[] | {id, name, size, region, created_at}]' <<<"$BODY")
kill -9 "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null
start_broker || fatal "broker restarts"
KEY=$K api GET /v1/vps
after=$(jq -c '[.data[] | {id, name, size, region, created_at}]' <<<"$BODY")
eq "after broker kill -9: every VPS still there, same ids" "$after" "$before"
check "after broker restart: the agent reconnects, all running" wait_for 30 "25 running" all_running
KEY=$K api POST "/v1/vps/${IDS[5]}/actions" '{"action":"shutdown"}'
check "after broker restart: actions still reach the agent" wait_status "$K" "${IDS[5]}" stopped 20

# Broker: a clean stop (SIGTERM) and restart.
stop_pid "$BROKER_PID"
start_broker || fatal "broker restarts after SIGTERM"
KEY=$K api GET /v1/vps
eq "after SIGTERM restart: still 25" "$(jget '.data | length')" 25
check "after SIGTERM restart: stopped VPS stays stopped" wait_status "$K" "${IDS[5]}" stopped 20
exit 0
