# Placement across hosts and sites, drain/undrain/remove, node show with
# events, liveness transitions and reboots, and no overbooking under many
# concurrent creations.
HOST_TIMEOUT_MS=2000
source "$(dirname "$0")/lib.sh"

start_broker --hold_ms=1000 || fatal "broker starts"
# Small hosts: 2 vCPUs (8 placeable at x4), 4 GB RAM each.
small=(--vcpus=2 --ram_mb=4096 --disk_gb=500)
start_agent hv1 "${small[@]}" --site=tas-1
start_agent hv2 "${small[@]}" --site=tas-1
start_agent hv3 "${small[@]}" --site=tas-2
up_count() { ctl --json node list | jq '[.[] | select(.state == "up")] | length'; }
check "three nodes up" wait_for 15 "3 up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '[.[] | select(.state == \"up\")] | length')\" == 3 ]"
K=$(new_account nodes) || fatal "account"
mk() { KEY=$K api POST /v1/vps "{\"name\":\"$1\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"region\":\"$2\"}"; }
host_of() { node_field "$1" .guests; }

# --- node show
out=$(ctl --json node show hv1)
eq "node show: the host" "$(jq -r .host <<<"$out")" hv1
check "node show: recent events hold its joining" jq -e '.events | map(.kind) | index("host.joined")' <<<"$out"
ctl node show hv1 >"$T/show.txt"
check "node show: a table and the events for people" grep -q "Recent events" "$T/show.txt"
check "node show: storage per type for people" grep -q "^Storage (GB used/total): ssd 0/500 hdd 0/0$" "$T/show.txt"
ctl node show nosuch >/dev/null 2>&1; eq "node show of an unknown host: exit 1" "$?" 1

# --- sites: numbered, named by admins
eq "sites come from the agents" "$(ctl --json site list | jq -r 'map(.slug) | sort | join(",")')" "tas-1,tas-2"
ctl site set tas-1 --name "Haarlem, NL" >/dev/null || not_ok "site set"
eq "an admin names a site" "$(ctl --json site list | jq -r '.[] | select(.slug == "tas-1") | .name')" "Haarlem, NL"
check "sites have numeric ids" bash -c "\"$BUILD/tasmanctl\" --broker $ADMIN --json site list | jq -e '.[0].id | type == \"number\"'"

# --- drain: nothing new lands there
ctl node drain hv1 >/dev/null || not_ok "drain hv1"
eq "drained node says draining" "$(node_field hv1 .state)" draining
for i in 1 2 3; do mk "d$i" tas-1; eq "create in tas-1 while hv1 drains -> 201" "$CODE" 201; done
eq "nothing placed on the drained node" "$(node_field hv1 .guests)" 0
eq "all on hv2" "$(node_field hv2 .guests)" 3
mk d4 tas-1; mk d5 tas-1
mk d6 tas-1
eq "tas-1 full (hv1 draining, hv2 without RAM) -> 422" "$CODE" 422
eq "the reason counts hosts per filter" "$(jget .error.details.hosts)" \
        "site tas-1: 2 hosts; 1 draining, 1 without 1024 MB RAM free"
ctl node undrain hv1 >/dev/null || not_ok "undrain hv1"
mk d6 tas-1
eq "after undrain, creation fits again -> 201" "$CODE" 201
eq "and lands on hv1" "$(node_field hv1 .guests)" 1
mk x1 tas-2
eq "region tas-2 -> hv3" "$(node_field hv3 .guests)" 1

# --- remove: only an empty node
ctl node remove hv2 >/dev/null 2>&1; eq "remove a node with guests: refused (exit 1)" "$?" 1
KEY=$K api GET /v1/vps
for id in $(jq -r '.data[] | select(.region == "tas-1") | .id' <<<"$BODY"); do KEY=$K api DELETE "/v1/vps/$id"; done
eq "deleting gives the reservations back" "$(node_field hv2 .guests)/$(node_field hv2 .ram_mb.used)" "0/0"
stop_pid "${AGENT_PIDS[hv2]}"
ctl node remove hv2 >/dev/null; eq "remove an empty node -> ok" "$?" 0
eq "it is gone" "$(ctl --json node list | jq '[.[] | select(.host == "hv2")] | length')" 0

# --- liveness: unreachable after the threshold, up again on the next sync
stop_pid "${AGENT_PIDS[hv3]}"
check "stopped agent: unreachable" wait_for 10 "unreachable" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node show hv3 | jq -r .state)\" == unreachable ]"
check "the transition is an event" wait_for 5 "event" bash -c "\"$BUILD/tasmanctl\" --broker $ADMIN --json node show hv3 | jq -e '.events | map(.kind) | index(\"host.unreachable\")'"
KEY=$K api GET /v1/vps
eq "its guest is unknown, not stopped" "$(jq -r '.data[] | select(.region == "tas-2") | .status' <<<"$BODY")" unknown
start_agent hv3 "${small[@]}" --site=tas-2
check "back: up" wait_for 10 "up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node show hv3 | jq -r .state)\" == up ]"
check "back: its guest runs" wait_for 10 "running" bash -c "curl -s -H 'Authorization: Bearer $K' $API/v1/vps | jq -e '.data[] | select(.region == \"tas-2\") | select(.status == \"running\")'"

# --- reboot: a new boot id is recorded, guests reconciled
stop_pid "${AGENT_PIDS[hv1]}"
start_agent hv1 "${small[@]}" --site=tas-1 --boot_id=after-reboot
check "reboot recorded as an event" wait_for 10 "rebooted" bash -c "\"$BUILD/tasmanctl\" --broker $ADMIN --json node show hv1 | jq -e '.events | map(.kind) | index(\"host.rebooted\")'"

# --- no overbooking under concurrency: 4 GB host, 24 concurrent 1 GB creations
start_agent hv4 "${small[@]}" --site=tas-3
check "hv4 up" wait_for 10 "up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node show hv4 | jq -r .state)\" == up ]"
for i in $(seq 1 24); do
        curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $K" -H 'Content-Type: application/json' \
                -d "{\"name\":\"c$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"region\":\"tas-3\"}" \
                "$API/v1/vps" >>"$T/codes" &
done
wait_for 30 "24 answers" bash -c "[ \$(wc -l <$T/codes) -eq 24 ]"
eq "exactly 4 of 24 concurrent creations placed" "$(grep -c '^201$' "$T/codes")" 4
eq "the other 20 refused with 422" "$(grep -c '^422$' "$T/codes")" 20
eq "hv4 RAM never overbooked" "$(node_field hv4 .ram_mb.used)" 4096

# --- Prometheus metrics on the admin listener
curl -s "$ADMIN/metrics" >"$T/metrics"
check "metrics: hosts by state" grep -q '^tasman_hosts{state="up"} 3$' "$T/metrics"
check "metrics: guests by status" grep -qE '^tasman_guests\{status="running"\} [0-9]+$' "$T/metrics"
eq "metrics: placements from the event stream" "$(awk '/^tasman_placements_total/ {print $2}' "$T/metrics")" 10
check "metrics: API requests by status class" grep -qE '^tasman_api_requests_total\{api="native",code="4xx"\} [1-9]' "$T/metrics"
check "metrics: latency histogram" grep -qE '^tasman_api_request_seconds_bucket\{api="native",le="\+Inf"\} [1-9]' "$T/metrics"

# --- storage types and anti-affinity groups (site tas-5: hv5 has hdd, hv6 not)
start_agent hv5 "${small[@]}" --site=tas-5 --hdd_gb=40
start_agent hv6 "${small[@]}" --site=tas-5
check "hv5 and hv6 up" wait_for 10 "up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '[.[] | select(.site == \"tas-5\" and .state == \"up\")] | length')\" == 2 ]"
eq "node show: hdd capacity per storage type" "$(ctl --json node show hv5 | jq -c .storage)" \
        '{"ssd":{"total_gb":500,"used_gb":0},"hdd":{"total_gb":40,"used_gb":0}}'
mks() { KEY=$K api POST /v1/vps "{\"name\":\"$1\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"region\":\"tas-5\"$2}"; }
mks hd1 ',"storage_type":"hdd"'
eq "hdd VPS -> 201" "$CODE" 201
eq "it says hdd" "$(jget .data.storage_type)" hdd
eq "hdd VPS lands on the host with hdd" "$(node_field hv5 .storage.hdd.used_gb)/$(node_field hv6 .guests)" "25/0"
mks hd2 ',"storage_type":"hdd"'
eq "hdd VPS, 25 GB more: 40 GB hdd is 10 short -> 422" "$CODE" 422
eq "the reason names the storage type" "$(jget .error.details.hosts)" \
        "site tas-5: 2 hosts; 1 without hdd storage, 1 without 25 GB hdd free"
mks g1 ',"anti_affinity_group":"pair"'
mks g2 ',"anti_affinity_group":"pair"'
eq "two of a group -> 201" "$CODE" 201
eq "the group is shown" "$(jget .data.anti_affinity_group)" pair
eq "one on each host" "$(node_field hv5 .guests)/$(node_field hv6 .guests)" "2/1"
mks g3 ',"anti_affinity_group":"pair"'
eq "a third of the group on two hosts -> 422" "$CODE" 422
eq "the reason names the group" "$(jget .error.details.hosts)" \
        "site tas-5: 2 hosts; 2 already holding a guest of group pair"
mks g4 ''
eq "without the group it still fits -> 201" "$CODE" 201
exit 0
