# packaging/haproxy/haproxy.cfg for real: haproxy in front of a broker, an
# agent dialing through it, a VPS created through it.
source "$(dirname "$0")/lib.sh"

command -v haproxy >/dev/null || fatal "haproxy is not installed (scripts/install-deps installs it)"
free_port TILAA_PORT || fatal "a port for the Tilaa API"
start_broker --tilaa_listen="127.0.0.1:$TILAA_PORT" || fatal "broker starts"
free_port LB_API && free_port LB_AGENT && free_port LB_TILAA && free_port LB_ADMIN || fatal "free ports"
sed -e "s/127.0.0.1:18080/127.0.0.1:$LB_API/; s/127.0.0.1:17400/127.0.0.1:$LB_AGENT/" \
    -e "s/127.0.0.1:18082/127.0.0.1:$LB_TILAA/; s/127.0.0.1:18081/127.0.0.1:$LB_ADMIN/" \
    -e "s/127.0.0.1:8080/127.0.0.1:$API_PORT/; s/127.0.0.1:7400/127.0.0.1:$AGENT_PORT/" \
    -e "s/127.0.0.1:8082/127.0.0.1:$TILAA_PORT/; s/127.0.0.1:8081/127.0.0.1:$ADMIN_PORT/" \
    "$ROOT/packaging/haproxy/haproxy.cfg" >"$T/haproxy.cfg"
check "every listener of the example is substituted" bash -c "! grep -qE '127.0.0.1:(808[0-2]|7400|1808[0-2]|17400)\\b' '$T/haproxy.cfg'"
check "the example config is valid" haproxy -c -q -f "$T/haproxy.cfg"
haproxy -f "$T/haproxy.cfg" >>"$T/haproxy.log" 2>&1 &
PIDS+=($!)
AGENT_URL=tcp://127.0.0.1:$LB_AGENT start_agent hv-lb
check "the agent joins through haproxy" wait_for 20 "node up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == up ]"
K=$(new_account lbtest) || fatal "account"
API=http://127.0.0.1:$LB_API
check "haproxy sees the broker healthy and answers" wait_for 15 "401 through haproxy" \
        bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $API/v1/vps)\" == 401 ]"
KEY=$K api POST /v1/vps '{"name":"lb1","size":"standard-1vcpu-1gb","image":"debian-12"}'
eq "create through haproxy -> 201" "$CODE" 201
check "the agent, dialing through haproxy, runs it" wait_status "$K" "$(jget .data.id)" running 20
ctl api-user create lbtest ops@lb.test --password lb-pass-123 >/dev/null || fatal "Tilaa API user"
check "the Tilaa API through haproxy" wait_for 15 "Tilaa through haproxy" \
        bash -c "curl -s -u ops@lb.test:lb-pass-123 http://127.0.0.1:$LB_TILAA/v1/virtual_machines | jq -e '.status == \"OK\" and (.virtual_machines | length) == 1' >/dev/null"
check "the admin API through haproxy" wait_for 15 "admin through haproxy" \
        bash -c "curl -s http://127.0.0.1:$LB_ADMIN/v1/nodes | jq -e '.data[0].host == \"hv-lb\"' >/dev/null"
# The broker gone: haproxy's /readyz checks take it out of service (503
# from haproxy, not a hang).
stop_pid "$BROKER_PID"
check "with the broker gone haproxy answers 503" wait_for 15 "503 through haproxy" \
        bash -c "[ \"\$(curl -s -o /dev/null -m 5 -w '%{http_code}' $API/v1/vps)\" == 503 ]"
exit 0
