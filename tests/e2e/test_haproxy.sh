# packaging/haproxy/haproxy.cfg for real: haproxy in front of a broker, an
# agent dialing through it, a VPS created through it.
source "$(dirname "$0")/lib.sh"

command -v haproxy >/dev/null || fatal "haproxy is not installed (scripts/install-deps installs it)"
start_broker || fatal "broker starts"
free_port LB_API && free_port LB_AGENT || fatal "free ports"
sed -e "s/127.0.0.1:18080/127.0.0.1:$LB_API/; s/127.0.0.1:17400/127.0.0.1:$LB_AGENT/" \
    -e "s/127.0.0.1:8080/127.0.0.1:$API_PORT/; s/127.0.0.1:7400/127.0.0.1:$AGENT_PORT/" \
    "$ROOT/packaging/haproxy/haproxy.cfg" >"$T/haproxy.cfg"
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
exit 0
