# Real QEMU guests on two simulated hosts, over VXLAN. Each host is a
# network namespace (a veth underlay between them, a management veth to the
# broker in the root namespace) with its own agent (manage_network=1, its
# own pools and state) on the machine's one libvirtd: each agent owns only
# the domains it defined (its host id in their metadata). libvirtd makes a
# guest's tap in the root namespace, on a stand-in bridge tbr<vni> there that
# stays down; the test moves each tap into its host's namespace, onto the
# agent's tbr<vni>, as TESTING.md describes. The guests take their private
# addresses from their cloud-init seeds and ping each other across VXLAN;
# a guest of another account on a network with the same CIDR (its own VNI)
# reaches neither. A network attached to a running guest is hot-plugged:
# the guest sees the new NIC.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || fatal "test_vxlan_qemu needs root (libvirtd, namespaces)"
V="virsh -q -c qemu:///system"
GUEST=$ROOT/build/guest
N=tq$$
HA=$N-ha HB=$N-hb
"$ROOT/scripts/start-libvirt" || fatal "libvirtd and virtlogd start"
"$ROOT/tests/fixtures/mkguest.sh" "$GUEST" || fatal "guest kernel + initramfs build"

NSES=() LINKS=()
drop_net() {
        for l in "${LINKS[@]+"${LINKS[@]}"}"; do ip link del "$l" 2>/dev/null; done
        for n in "${NSES[@]+"${NSES[@]}"}"; do ip netns del "$n" 2>/dev/null; done
        return 0
}
own_domains() { ls "$T"/h*/console 2>/dev/null | sed -n 's/^\(tasman-[0-9]*\)\.log$/\1/p'; }
remove_own() {
        for d in $(own_domains); do
                $V destroy "$d" >/dev/null 2>&1
                $V undefine --snapshots-metadata "$d" >/dev/null 2>&1
        done
        for p in $N-ha-ssd $N-ha-hdd $N-hb-ssd $N-hb-hdd; do
                $V pool-destroy "$p" >/dev/null 2>&1
                $V pool-undefine "$p" >/dev/null 2>&1
        done
        drop_net
}
CLEANUPS+=(remove_own)
netns() { ip netns add "$1" && NSES+=("$1") && ip -n "$1" link set lo up; }
netns "$HA" && netns "$HB" || fatal "host namespaces"
ip link add "$N-ua" type veth peer name "$N-ub" || fatal "underlay veth"
ip link set "$N-ua" netns "$HA" && ip link set "$N-ub" netns "$HB" || fatal "underlay into the hosts"
ip -n "$HA" addr add 10.250.0.1/24 dev "$N-ua" && ip -n "$HA" link set "$N-ua" up
ip -n "$HB" addr add 10.250.0.2/24 dev "$N-ub" && ip -n "$HB" link set "$N-ub" up
mgmt() { # NETNS K: root 10.251.K.1 <-> host 10.251.K.2
        ip link add "$N-m$2" type veth peer name "$N-h$2" || return 1
        LINKS+=("$N-m$2")
        ip link set "$N-h$2" netns "$1" || return 1
        ip addr add "10.251.$2.1/30" dev "$N-m$2" && ip link set "$N-m$2" up || return 1
        ip -n "$1" addr add "10.251.$2.2/30" dev "$N-h$2" && ip -n "$1" link set "$N-h$2" up
}
mgmt "$HA" 1 && mgmt "$HB" 2 || fatal "management links"
check "the underlay works" wait_for 10 "ping" ip netns exec "$HA" ping -c 1 -W 1 10.250.0.2

# Three images (the catalog's stand-ins and one more), each booting the
# test kernel with what its guest pings: guest a (the first address,
# 10.77.0.2) pings b (.3), b pings a, and another account's guest c (.2 of
# its own network) pings b's address.
boot() { # SLUG CMDLINE
        mkdir -p "$T/boot/$1"
        cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/boot/$1/"
        echo "console=ttyS0 $2" >"$T/boot/$1/cmdline"
}
boot debian-12 "tasman.ping=10.77.0.3 tasman.pingtries=120"
boot ubuntu-24.04 "tasman.ping=10.77.0.2 tasman.pingtries=120"
boot other "tasman.ping=10.77.0.3 tasman.pingtries=20"
mkdir -p "$T/ha" "$T/hb"
chmod -R a+rX "$T"

AGENT_URL=tcp://0.0.0.0:$AGENT_PORT
start_broker || fatal "broker starts"
cp "$T/catalog/debian-12.raw" "$T/catalog/other.raw"
ctl image add other --name Other --url "file://$T/catalog/other.raw" --format raw \
        --sha256 "$(sha256sum "$T/catalog/other.raw" | cut -d' ' -f1)" >/dev/null || fatal "image other"
declare -A AGENT_PIDS=()
host_agent() { # NAME NETNS UNDERLAY K
        ip netns exec "$2" "$BUILD/tasman-agent" --broker="tcp://10.251.$4.1:$AGENT_PORT" \
                --libvirt_uri=qemu:///system --domain_type=qemu --host_id="$N-$1" --state_dir="$T/$1" \
                --pool_ssd="$N-$1-ssd" --pool_hdd="$N-$1-hdd" --boot_dir="$T/boot" \
                --vcpus=4 --ram_mb=4096 --disk_gb=100 --shutdown_timeout_ms=2000 \
                --underlay_ip="$3" --observe_interval_ms=1000 --manage_network=1 >>"$T/$1.log" 2>&1 &
        AGENT_PIDS[$1]=$!
        PIDS+=("$!")
}
host_agent ha "$HA" 10.250.0.1 1
host_agent hb "$HB" 10.250.0.2 2
check "host a joins" wait_node_up "$N-ha"
check "host b joins" wait_node_up "$N-hb"
A=$(new_account vq-a) || fatal "account a"
B=$(new_account vq-b) || fatal "account b"
sql() { sqlite3 -cmd ".timeout 5000" "$T/broker.db" "$@"; }
host_of() { sql "SELECT h.name FROM vms v JOIN hosts h ON h.id = v.host_id WHERE v.id = $1"; }
ns_of() { [ "$(host_of "$1")" == "$N-ha" ] && echo "$HA" || echo "$HB"; }
standin_bridge() { # VNI: libvirtd's taps start on it, in the root namespace, down
        ip link add "tbr$1" type bridge && LINKS+=("tbr$1")
}
mknet() { # KEY NAME CIDR -> network id; VNI of NAME in VNI_<NAME>
        KEY=$1 api POST /v1/networks "{\"name\":\"$2\",\"cidr\":\"$3\"}"
        [ "$CODE" == 201 ] || { echo "# network $2 -> $CODE $BODY"; return 1; }
        jget .data.id
}
mkvps() { # KEY NAME IMAGE NETWORK -> id (ids are numbers in the store: vm)
        KEY=$1 api POST /v1/vps "{\"name\":\"$2\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"$3\",\"network\":\"$4\",\"anti_affinity_group\":\"spread\"}"
        [ "$CODE" == 201 ] || { echo "# vps $2 -> $CODE $BODY"; return 1; }
        jget .data.id
}
vm_num() { sql "SELECT id FROM vms WHERE name = '$1' AND deleted_at IS NULL"; }
# move_tap VM-NUMBER VNI: the guest's tap on that network into its host
move_tap() {
        local dom=tasman-$1 mac tap ns
        mac=$(sql "SELECT n.mac FROM nics n JOIN networks w ON w.id = n.network_id WHERE n.vm_id = $1 AND w.vni = $2")
        tap=$($V domiflist "$dom" | awk -v m="$mac" '$5 == m {print $1}')
        ns=$(ns_of "$1")
        [ -n "$tap" ] || { echo "# no tap of $dom for $mac"; return 1; }
        ip link set "$tap" nomaster && ip link set "$tap" netns "$ns" &&
                ip -n "$ns" link set "$tap" master "tbr$2" up
}
console() { echo "$T/$([ "$(host_of "$1")" == "$N-ha" ] && echo ha || echo hb)/console/tasman-$1.log"; }

NET=$(mknet "$A" backend 10.77.0.0/24) || fatal "network of account a"
VNI=$(sql "SELECT vni FROM networks WHERE name = 'backend'")
standin_bridge "$VNI" || fatal "stand-in bridge tbr$VNI"
GA=$(mkvps "$A" ga debian-12 "$NET") || fatal "guest a"
GB=$(mkvps "$A" gb ubuntu-24.04 "$NET") || fatal "guest b"
check "guest a runs" wait_status "$A" "$GA" running 90
check "guest b runs" wait_status "$A" "$GB" running 90
IA=$(vm_num ga) IB=$(vm_num gb)
check "the two guests are on two hosts" [ "$(host_of "$IA")" != "$(host_of "$IB")" ]
eq "guest a has the network's first address" "$(sql "SELECT ipv4 FROM nics WHERE vm_id = $IA AND network_id != 0")" 10.77.0.2
eq "guest b the next" "$(sql "SELECT ipv4 FROM nics WHERE vm_id = $IB AND network_id != 0")" 10.77.0.3
for h in "$HA" "$HB"; do
        check "$h: the agent made tbr$VNI and tvx$VNI" wait_for 20 "devices" ip -n "$h" link show "tvx$VNI"
done
check "each agent sees only its own guest" bash -c \
        "grep -q 'tasman-$IA' '$T/ha.log' '$T/hb.log' && ! grep -q 'undefine' '$T/ha.log' '$T/hb.log'"
check "guest a's tap onto host $(host_of "$IA")'s tbr$VNI" move_tap "$IA" "$VNI"
check "guest b's tap onto host $(host_of "$IB")'s tbr$VNI" move_tap "$IB" "$VNI"
CA=$(console "$IA") CB=$(console "$IB")
check "guest a took 10.77.0.2 from its seed" wait_for 60 "net a" grep -q "TASMAN-NET eth0 10.77.0.2/24" "$CA"
check "guest b took 10.77.0.3 from its seed" wait_for 60 "net b" grep -q "TASMAN-NET eth0 10.77.0.3/24" "$CB"
check "guest a reaches guest b across VXLAN" wait_for 150 "a pings b" grep -q "TASMAN-PING-OK 10.77.0.3" "$CA"
check "guest b reaches guest a across VXLAN" wait_for 150 "b pings a" grep -q "TASMAN-PING-OK 10.77.0.2" "$CB"
check "the hosts' VXLANs carried it (head-end entries for each other)" bash -c \
        "bridge -n $HA -j fdb show dev tvx$VNI | jq -e '.[] | select(.mac == \"00:00:00:00:00:00\" and .dst == \"10.250.0.2\")' >/dev/null"

# Another account, a network with the same CIDR: its own VNI; its guest
# looks for guest b's address on its link and gets no answer.
NETB=$(mknet "$B" other 10.77.0.0/24) || fatal "network of account b"
VNIB=$(sql "SELECT vni FROM networks WHERE name = 'other'")
check "another VNI" [ "$VNIB" != "$VNI" ]
standin_bridge "$VNIB" || fatal "stand-in bridge tbr$VNIB"
GC=$(KEY=$B api POST /v1/vps "{\"name\":\"gc\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"other\",\"network\":\"$NETB\"}"; jget .data.id)
check "guest c runs" wait_status "$B" "$GC" running 90
IC=$(vm_num gc)
check "guest c's host has tbr$VNIB" wait_for 20 "bridge" ip -n "$(ns_of "$IC")" link show "tbr$VNIB"
check "guest c's tap onto its host's tbr$VNIB" move_tap "$IC" "$VNIB"
CC=$(console "$IC")
check "guest c took 10.77.0.2 of its own network" wait_for 60 "net c" grep -q "TASMAN-NET eth0 10.77.0.2/24" "$CC"
check "guest c gets no answer from 10.77.0.3 (guest b's) on its own network" wait_for 90 "c gives up" grep -q "TASMAN-PING-FAIL 10.77.0.3" "$CC"
check "and never one" bash -c "! grep -q 'TASMAN-PING-OK' '$CC'"

# Hot-plug: a second network attached to the running guest a.
NET2=$(mknet "$A" second 10.78.0.0/24) || fatal "second network"
VNI2=$(sql "SELECT vni FROM networks WHERE name = 'second'")
standin_bridge "$VNI2" || fatal "stand-in bridge tbr$VNI2"
KEY=$A api POST "/v1/networks/$NET2/attach" "{\"vps_id\":\"$GA\"}"
eq "attach the running guest a to a second network -> 202" "$CODE" 202
M2=$(sql "SELECT n.mac FROM nics n WHERE n.vm_id = $IA AND n.network_id = (SELECT id FROM networks WHERE name = 'second')")
check "the running domain has the new NIC" wait_for 30 "live NIC" bash -c "$V domiflist tasman-$IA | grep -q '$M2'"
# (libvirt saves the definition just after the live attach)
check "and so has its definition" wait_for 10 "NIC defined" bash -c "$V dumpxml --inactive tasman-$IA | grep -q \"$M2\""
check "the guest sees it appear" wait_for 30 "guest NIC" grep -q "TASMAN-NIC-ADDED $M2" "$CA"
check "guest a kept running (no restart)" [ "$(grep -c TASMAN-BOOT-COUNT "$CA")" -eq 1 ]
for v in "$GA" "$GB"; do KEY=$A api DELETE "/v1/vps/$v"; done
KEY=$B api DELETE "/v1/vps/$GC"
check "the guests go" wait_for 60 "domains gone" bash -c "! $V list --all --name | grep -qE '^tasman-($IA|$IB|$IC)\$'"
