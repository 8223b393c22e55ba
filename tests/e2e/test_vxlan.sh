# Private networks across simulated hosts: two network namespaces joined by
# a veth underlay, an agent in each (libvirt's test driver for the guests'
# domains), each host reaching the broker over a management veth pair of
# its own (a /30 between the root namespace and the host). Each guest is stood in for
# by a veth end on its network's bridge, in a namespace of its own with the
# guest's MAC and address from the broker. Checked: the bridges and VXLANs
# the agents make, head-end replication entries, guests of one network on
# two hosts reaching each other across VXLAN, guests of another account's
# network not reaching them, a guest that leaves taking its entries with
# it, and kill -9 and restart of an agent leaving the kernel state as it
# was.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || fatal "test_net needs root (network namespaces): run it as root"
command -v ip >/dev/null && command -v bridge >/dev/null || fatal "test_net needs iproute2 (ip, bridge)"
N=tn$$
HA=$N-ha HB=$N-hb
NSES=()
netns() { ip netns add "$1" && NSES+=("$1") && ip -n "$1" link set lo up; }
drop_netns() { for n in "${NSES[@]}"; do ip netns del "$n" 2>/dev/null; done; return 0; }
CLEANUPS+=(drop_netns)
netns "$HA" || fatal "namespace $HA"
netns "$HB" || fatal "namespace $HB"
ip link add "$N-ua" type veth peer name "$N-ub" || fatal "underlay veth"
ip link set "$N-ua" netns "$HA" && ip link set "$N-ub" netns "$HB" || fatal "underlay into the hosts"
ip -n "$HA" addr add 10.250.0.1/24 dev "$N-ua" && ip -n "$HA" link set "$N-ua" up
ip -n "$HB" addr add 10.250.0.2/24 dev "$N-ub" && ip -n "$HB" link set "$N-ub" up
check "the underlay works" wait_for 10 "ping" ip netns exec "$HA" ping -c 1 -W 1 10.250.0.2
# Management links: root 10.251.K.1 <-> host 10.251.K.2.
mgmt() { # NETNS K
        ip link add "$N-m$2" type veth peer name "$N-h$2" || return 1
        LINKS+=("$N-m$2")
        ip link set "$N-h$2" netns "$1" || return 1
        ip addr add "10.251.$2.1/30" dev "$N-m$2" && ip link set "$N-m$2" up || return 1
        ip -n "$1" addr add "10.251.$2.2/30" dev "$N-h$2" && ip -n "$1" link set "$N-h$2" up
}
LINKS=()
drop_links() { for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null; done; return 0; }
CLEANUPS+=(drop_links)
mgmt "$HA" 1 || fatal "management link of host a"
mgmt "$HB" 2 || fatal "management link of host b"

AGENT_URL=tcp://0.0.0.0:$AGENT_PORT
start_broker || fatal "broker starts"
host_agent() { # NAME NETNS UNDERLAY
        local k=1
        [ "$1" == ha ] || k=2
        mkdir -p "$T/$1"
        ip netns exec "$2" "$BUILD/tasman-agent" --broker="tcp://10.251.$k.1:$AGENT_PORT" --libvirt_uri=test:///default \
                --host_id="$1" --state_dir="$T/$1" --vcpus=64 --ram_mb=262144 --disk_gb=10000 \
                --underlay_ip="$3" --observe_interval_ms=1000 --manage_network=1 ${AGENT_EXTRA:-} >>"$T/$1.log" 2>&1 &
        AGENT_PIDS[$1]=$!
        PIDS+=("$!")
}
host_agent ha "$HA" 10.250.0.1
host_agent hb "$HB" 10.250.0.2
check "both hosts join" wait_for 15 "2 up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '[.[] | select(.state == \"up\")] | length')\" == 2 ]"
A=$(new_account net-a) || fatal "account a"
B=$(new_account net-b) || fatal "account b"

KEY=$A api POST /v1/networks '{"name":"backend","cidr":"10.50.0.0/24"}'
eq "create a network -> 201" "$CODE" 201
NET=$(jget .data.id)
sql() { sqlite3 -cmd ".timeout 5000" "$T/broker.db" "$@"; }
VNI=$(sql "SELECT vni FROM networks WHERE name = 'backend'")
mk() { # KEY NAME NETWORK -> the VPS id
        KEY=$1 api POST /v1/vps "{\"name\":\"$2\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$3\",\"anti_affinity_group\":\"spread\"}"
        [ "$CODE" == 201 ] || { echo "# create $2 -> $CODE $BODY"; return 1; }
        jget .data.id
}
V1=$(mk "$A" web1 "$NET") || not_ok "create web1 on the network"
V2=$(mk "$A" web2 "$NET") || not_ok "create web2 on the network"
check "web1 runs" wait_status "$A" "$V1" running
check "web2 runs" wait_status "$A" "$V2" running
host_of() { sql "SELECT h.name FROM vms v JOIN hosts h ON h.id = v.host_id WHERE v.name = '$1' AND v.deleted_at IS NULL"; }
ns_of() { [ "$(host_of "$1")" == ha ] && echo "$HA" || echo "$HB"; }
check "the two guests are on two hosts" [ "$(host_of web1)" != "$(host_of web2)" ]
nic() { sql "SELECT n.$2 FROM nics n JOIN vms v ON v.id = n.vm_id WHERE v.name = '$1' AND v.deleted_at IS NULL AND n.network_id != 0"; }

# The agents' devices.
for h in "$HA" "$HB"; do
        check "$h: bridge tbr$VNI and VXLAN tvx$VNI" wait_for 20 "devices" bash -c \
                "ip -n $h -d -j link show tvx$VNI | jq -e '.[0].linkinfo.info_data.id == $VNI and .[0].master == \"tbr$VNI\"'"
done
check "the VXLAN does not learn, uses port 4789 and its host's underlay address" bash -c \
        "ip -n $HA -d -j link show tvx$VNI | jq -e '.[0].linkinfo.info_data | .learning == false and .port == 4789 and .local == \"10.250.0.1\"'"
fdb() { bridge -n "$1" -j fdb show dev "tvx$VNI" | jq -r '.[] | select(.dst != null) | "\(.mac) \(.dst)"' | sort; }
check "host a replicates to host b (all-zero entry)" wait_for 20 "flood entry" bash -c "bridge -n $HA -j fdb show dev tvx$VNI | jq -e '.[] | select(.mac == \"00:00:00:00:00:00\" and .dst == \"10.250.0.2\")'"
M2=$(nic web2 mac)
check "host a knows web2's MAC behind host b" bash -c "bridge -n $(ns_of web1) -j fdb show dev tvx$VNI | jq -e '.[] | select(.mac == \"$M2\" and .dst != null)'"

# Stand-in guests: a veth end on the bridge, the other in the guest's own
# namespace with the guest's MAC and address.
standin() { # VPS-NAME GUEST-NS BRIDGE
        local host ns=$2 ip mac
        host=$(ns_of "$1"); ip=$(nic "$1" ipv4); mac=$(nic "$1" mac)
        netns "$ns" || return 1
        ip -n "$host" link add "g-$1" type veth peer name "p-$1" || return 1
        ip -n "$host" link set "p-$1" master "$3" up || return 1
        ip -n "$host" link set "g-$1" netns "$ns" || return 1
        ip -n "$ns" link set "g-$1" address "$mac" mtu 1450 up || return 1
        ip -n "$ns" addr add "$ip/24" dev "g-$1"
}
check "stand-in for web1" standin web1 "$N-g1" "tbr$VNI"
check "stand-in for web2" standin web2 "$N-g2" "tbr$VNI"
check "web1 reaches web2 across VXLAN" ip netns exec "$N-g1" ping -c 3 -W 2 "$(nic web2 ipv4)"

# Another account's network (the same CIDR: its own VNI, its own bridge).
KEY=$B api POST /v1/networks '{"name":"other","cidr":"10.60.0.0/24"}'
eq "another account's network -> 201" "$CODE" 201
NETB=$(jget .data.id)
VNIB=$(sql "SELECT vni FROM networks WHERE name = 'other'")
check "a VNI of its own" [ "$VNIB" != "$VNI" ]
V3=$(mk "$B" intruder "$NETB") || not_ok "create intruder"
check "intruder runs" wait_status "$B" "$V3" running
check "its host has its bridge" wait_for 20 "tbr$VNIB" ip -n "$(ns_of intruder)" link show "tbr$VNIB"
check "stand-in for intruder" standin intruder "$N-g3" "tbr$VNIB"
# It even claims the other network's addresses are on its link: its ARP
# requests stay on its own VNI, nobody answers.
ip -n "$N-g3" route add 10.50.0.0/24 dev g-intruder
check "intruder cannot reach web1" bash -c "! ip netns exec $N-g3 ping -c 2 -W 1 $(nic web1 ipv4)"
check "nor web2" bash -c "! ip netns exec $N-g3 ping -c 2 -W 1 $(nic web2 ipv4)"

# kill -9 of an agent and a restart: the kernel state is as it was.
# (timers and learned entries change by themselves: left out)
state() {
        ip -n "$1" -d -j link | jq -S 'map(select(.ifname | test("^t(br|vx)")) | del(.stats, .stats64))
                | walk(if type == "object" then with_entries(select(.key | test("_timer$") | not)) else . end)'
        bridge -n "$1" -j fdb show | jq -S 'map(select(.ifname | test("^tvx")) | select(.dst != null))'
}
HW=$(ns_of web1)
AW=$([ "$HW" == "$HA" ] && echo ha || echo hb)
UW=$([ "$HW" == "$HA" ] && echo 10.250.0.1 || echo 10.250.0.2)
state "$HW" >"$T/before.json"
kill -9 "${AGENT_PIDS[$AW]}"
wait "${AGENT_PIDS[$AW]}" 2>/dev/null
host_agent "$AW" "$HW" "$UW"
check "the agent is back" wait_for 20 "node up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node show $AW | jq -r .state)\" == up ]"
sleep 2 # it applies what the broker asks at once; give it a full pass
state "$HW" >"$T/after.json"
check "after kill -9 and restart: links and entries identical" cmp -s "$T/before.json" "$T/after.json"
check "web1 still reaches web2" ip netns exec "$N-g1" ping -c 2 -W 2 "$(nic web2 ipv4)"

# A guest that leaves takes its entries with it on every other host.
KEY=$A api DELETE "/v1/vps/$V2"
eq "delete web2 -> 204" "$CODE" 204
check "web2's MAC leaves web1's host" wait_for 20 "entry gone" bash -c "! bridge -n $HW -j fdb show dev tvx$VNI | jq -e '.[] | select(.mac == \"$M2\" and .dst != null)'"
check "and with no guest of the network left there, so does the flood entry to its host" bash -c "! bridge -n $HW -j fdb show dev tvx$VNI | jq -e '.[] | select(.mac == \"00:00:00:00:00:00\")'"
KEY=$A api DELETE "/v1/networks/$NET"
eq "a network with a guest: not deleted" "$CODE" 409
KEY=$A api DELETE "/v1/vps/$V1"
KEY=$A api DELETE "/v1/networks/$NET"
eq "an empty network is deleted -> 204" "$CODE" 204
check "its bridge and VXLAN go" wait_for 20 "devices gone" bash -c "! ip -n $HW link show tbr$VNI 2>/dev/null && ! ip -n $HW link show tvx$VNI 2>/dev/null"
exit 0
