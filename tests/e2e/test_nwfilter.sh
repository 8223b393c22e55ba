# A real QEMU guest that forges its source addresses gets nothing through.
# The guest (tests/fixtures/mkguest.sh, tasman.spoof=) is ordered through
# the native API on a site with a public address pool; its NIC is on the
# agent's public bridge, whose uplink is a veth to a namespace of this test
# that stands for the site's gateway (the pool's gateway addresses) and
# records every frame with tcpdump. The guest takes its addresses from its
# cloud-init seed, pings the gateway from them, then from forged IPv4 and
# IPv6 sources and a forged MAC. With the agent's filter
# (tasman-clean-traffic) the gateway sees the guest's own traffic, IPv4 and
# IPv6, and none of the forged; the same guest with the filter turned off
# (nic_filter=) gets the forged traffic through, which shows the checks can
# fail.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || fatal "test_nwfilter needs root (libvirtd, bridges, namespaces)"
command -v tcpdump >/dev/null || fatal "test_nwfilter needs tcpdump (scripts/install-deps installs it)"
V="virsh -q -c qemu:///system"
GUEST=$ROOT/build/guest
N=tf$$
BR=$N-br NS=$N-gw UP=$N-up FAR=$N-far
G4=192.0.2.1 G6=2001:db8:77::1

"$ROOT/scripts/start-libvirt" || fatal "libvirtd and virtlogd start"
"$ROOT/tests/fixtures/mkguest.sh" "$GUEST" || fatal "guest kernel + initramfs build"
mkdir -p "$T/boot/debian-12" "$T/hv"
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/boot/debian-12/"
echo "console=ttyS0 tasman.spoof=$G4,$G6" >"$T/boot/debian-12/cmdline"
chmod -R a+rX "$T"
POOL=tasman-nf-$$

own_domains() { ls "$T/hv/console" 2>/dev/null | sed -n 's/^\(tasman-[0-9]*\)\.log$/\1/p'; }
remove_own() {
        for d in $(own_domains); do
                $V destroy "$d" >/dev/null 2>&1
                $V undefine --snapshots-metadata "$d" >/dev/null 2>&1
        done
        for p in "$POOL-ssd" "$POOL-hdd"; do
                $V pool-destroy "$p" >/dev/null 2>&1
                $V pool-undefine "$p" >/dev/null 2>&1
        done
        ip link del "$BR" 2>/dev/null
        ip link del "$UP" 2>/dev/null
        ip netns del "$NS" 2>/dev/null
        return 0
}
CLEANUPS+=(remove_own)

# The public bridge and its uplink to the gateway's namespace.
ip link add "$BR" type bridge && ip link set "$BR" up || fatal "bridge $BR"
ip netns add "$NS" || fatal "namespace $NS"
ip link add "$UP" type veth peer name "$FAR" || fatal "uplink veth"
ip link set "$UP" master "$BR" && ip link set "$UP" up || fatal "uplink into the bridge"
ip link set "$FAR" netns "$NS" || fatal "uplink's far end into $NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$G4/24" dev "$FAR"
ip -n "$NS" addr add "$G6/64" dev "$FAR" nodad
ip -n "$NS" link set "$FAR" up
ok "public bridge with an uplink to the gateway's namespace"

start_broker || fatal "broker starts"
KEY=$(new_account nf-test) || fatal "account"

agent() { # extra flags
        "$BUILD/tasman-agent" --broker="$AGENT_URL" --libvirt_uri=qemu:///system --manage_network=0 \
                --host_id="nf-$$" --state_dir="$T/hv" --domain_type=qemu \
                --shutdown_timeout_ms=2000 --vcpus=2 --ram_mb=4096 --disk_gb=100 \
                --boot_dir="$T/boot" --pool_ssd="$POOL-ssd" --pool_hdd="$POOL-hdd" \
                --public_bridge="$BR" "$@" >>"$T/agent.log" 2>&1 &
        AGENT=$!
        PIDS+=("$AGENT")
}

# run_guest NAME: orders a guest, captures the gateway's side until the
# guest says it is done; sets ID, CAP (the capture as text), OWN4, OWN6.
run_guest() {
        local name=$1 dom console tcpd
        ip netns exec "$NS" tcpdump -Z root -i "$FAR" -nn -e -U -w "$T/$name.pcap" >"$T/$name.tcpdump.log" 2>&1 &
        tcpd=$!
        PIDS+=("$tcpd")
        wait_for 10 "tcpdump listens" grep -q "listening on" "$T/$name.tcpdump.log" || return 1
        api POST /v1/vps "{\"name\":\"$name\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}"
        [ "$CODE" = 201 ] || { echo "# create: $CODE $BODY"; return 1; }
        ID=$(jget .data.id)
        wait_status "$KEY" "$ID" running 90 || return 1
        dom=$(own_domains | tail -1)
        console=$T/hv/console/$dom.log
        wait_for 120 "$name done" grep -q TASMAN-SPOOF-DONE "$console" || { tail -20 "$console" | sed 's/^/#   /'; return 1; }
        sleep 1
        stop_pid "$tcpd"
        CAP=$(tcpdump -nn -e -r "$T/$name.pcap" 2>/dev/null)
        OWN4=$(sed -n 's/^TASMAN-NET eth0 \([0-9.]*\)\/.*/\1/p' "$console" | head -1)
        OWN6=$(sed -n 's/^TASMAN-NET eth0 \([0-9a-f:]*\)\/.*/\1/p' "$console" | head -1)
        OWNMAC=$($V domiflist "$dom" | awk 'NR > 0 {print $5}' | head -1)
        echo "# $name: own $OWN4 $OWN6 $OWNMAC; $(wc -l <<<"$CAP") frames captured"
}
sent() { grep -q -- "$1" <<<"$CAP"; }
# ICMP echo requests from a source address: "IP A > G4: ICMP echo request" /
# "IP6 A > G6: ICMP6, echo request"
from4() { grep -qE "IPv4.*: $1 > $G4: ICMP echo request" <<<"$CAP"; }
from6() { grep -qE "IPv6.*: $1 > $G6: ICMP6, echo request" <<<"$CAP"; }

agent
check "the agent joins" wait_node_up "nf-$$"
# (a site exists once a host of it has joined)
curl -fs -X POST "$ADMIN/v1/ip_pools" -H 'Content-Type: application/json' \
        -d "{\"site\":\"tas-1\",\"ipv4\":\"192.0.2.0/24\",\"gateway4\":\"$G4\",\"ipv6\":\"2001:db8:77::/64\",\"gateway6\":\"$G6\"}" \
        >/dev/null || fatal "the site's address pool"
check "the agent defined its filters" bash -c "$V nwfilter-list | grep -q tasman-clean-traffic && $V nwfilter-list | grep -q tasman-no-ipv6-spoofing"
run_guest filtered || fatal "a filtered guest boots and runs its forgeries"
DOM=$(own_domains | tail -1)
check "its NIC is filtered by tasman-clean-traffic with its addresses" \
        bash -c "$V dumpxml $DOM | grep -q \"filterref filter='tasman-clean-traffic'\" && $V dumpxml $DOM | grep -q \"name='IPV6' value='$OWN6'\""
check "the guest took its IPv4 address from its seed" [ -n "$OWN4" ]
check "the guest took its IPv6 address from its seed" [ -n "$OWN6" ]
check "filtered: its own IPv4 traffic reaches the gateway" from4 "$OWN4"
check "filtered: its own IPv6 traffic reaches the gateway" from6 "$OWN6"
check "filtered: nothing from a forged IPv4 source in its subnet" bash -c "! grep -q '192\.0\.2\.222' <<<\"\$0\"" "$CAP"
check "filtered: nothing from a forged IPv4 source outside it" bash -c "! grep -q '198\.51\.100\.222' <<<\"\$0\"" "$CAP"
check "filtered: nothing from a forged IPv6 source" bash -c "! grep -q '2001:db8:dead::222' <<<\"\$0\"" "$CAP"
check "filtered: nothing from a forged MAC" bash -c "! grep -q '52:54:00:de:ad:01' <<<\"\$0\"" "$CAP"

KEY=$KEY api DELETE "/v1/vps/$ID"
eq "delete the filtered guest -> 204" "$CODE" 204
check "its domain goes" wait_for 60 "domain gone" bash -c "! $V list --all --name | grep -qx '$DOM'"

stop_pid "$AGENT"
agent --nic_filter=
check "the agent comes back with filtering off" wait_node_up "nf-$$"
run_guest unfiltered || fatal "an unfiltered guest boots and runs its forgeries"
check "unfiltered: its own IPv4 traffic reaches the gateway" from4 "$OWN4"
check "unfiltered: a forged IPv4 source gets through (the check above can fail)" from4 192.0.2.222
check "unfiltered: a forged IPv4 source outside the subnet gets through" from4 198.51.100.222
check "unfiltered: a forged IPv6 source gets through" from6 2001:db8:dead::222
check "unfiltered: a forged MAC gets through" sent "52:54:00:de:ad:01 >"
KEY=$KEY api DELETE "/v1/vps/$ID"
eq "delete the unfiltered guest -> 204" "$CODE" 204
