# A real guest under libvirtd + QEMU (TCG): a Debian kernel and a busybox
# initramfs built by tests/fixtures/mkguest.sh boot through the API; its
# serial console shows our marker and hostname. Then reboot, shutdown and
# start, and kill -9 of the agent: no duplicate, nothing restarted, and a
# VPS deleted while the agent was down is gone once it is back.
source "$(dirname "$0")/lib.sh"

V="virsh -q -c qemu:///system"
GUEST=$ROOT/build/guest
MARK=tasman-e2e-$RANDOM$RANDOM

"$ROOT/scripts/start-libvirt" || fatal "libvirtd and virtlogd start (needs root and the libvirt packages)"
ok "libvirtd answers on qemu:///system"
"$ROOT/tests/fixtures/mkguest.sh" "$GUEST" || fatal "guest kernel + initramfs build"
ok "guest kernel and initramfs built from Debian packages"

mkdir -p "$T/hv/images/debian-12"
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/hv/images/debian-12/"
echo "console=ttyS0 tasman.marker=$MARK" >"$T/hv/images/debian-12/cmdline"
chmod -R a+rX "$T"

# Whatever happens, remove the domains this test made (named by the console
# logs in our own state dir), and nothing else.
own_domains() { ls "$T/hv/console" 2>/dev/null | sed -n 's/^\(tasman-[0-9]*\)\.log$/\1/p'; }
remove_own() {
        for d in $(own_domains); do
                $V destroy "$d" >/dev/null 2>&1
                $V undefine "$d" >/dev/null 2>&1
        done
        return 0
}
CLEANUPS+=(remove_own)

start_broker || fatal "broker starts"
qemu_agent() {
        "$BUILD/tasman-agent" --broker="$AGENT_URL" --libvirt_uri=qemu:///system \
                --host_id="qemu-$$" --state_dir="$T/hv" --domain_type=qemu \
                --shutdown_timeout_ms=3000 --vcpus=2 --ram_mb=4096 --disk_gb=100 \
                >>"$T/agent.log" 2>&1 &
        AGENT=$!
        PIDS+=("$AGENT")
}
qemu_agent
KEY_A=$(new_account qemu-test) || fatal "account"

KEY=$KEY_A api POST /v1/vps '{"name":"guest1","size":"standard-1vcpu-1gb","image":"debian-12"}'
eq "create a QEMU VPS -> 201" "$CODE" 201
ID=$(jget .data.id)
check "VPS becomes running" wait_status "$KEY_A" "$ID" running 60
DOM=$(own_domains | head -1)
check "the agent made one domain" [ "$(own_domains | wc -l)" -eq 1 ]
CONSOLE=$T/hv/console/$DOM.log
check "libvirt runs it as a QEMU (TCG) domain" bash -c "$V dumpxml $DOM | grep -q \"<domain type='qemu'\""
boots() { grep -c 'TASMAN-BOOT-COUNT' "$CONSOLE" 2>/dev/null || echo 0; }
check "guest boots: console shows the marker" wait_for 90 "marker" grep -q "cmdline-marker=$MARK" "$CONSOLE"
check "guest got its hostname from the broker" grep -q "TASMAN-GUEST-BOOTED hostname=guest1 " "$CONSOLE"
eq "booted once" "$(boots)" 1

KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"reboot"}'
eq "reboot -> 202" "$CODE" 202
check "reboot: the guest boots a second time" wait_for 90 "2 boots" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -ge 2 ]"
check "after reboot: running" wait_status "$KEY_A" "$ID" running 30

KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"shutdown"}'
check "shutdown (ACPI, then power off after the timeout): stopped" wait_status "$KEY_A" "$ID" stopped 30
eq "libvirt agrees: shut off" "$($V domstate "$DOM")" "shut off"
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"start"}'
check "start: running" wait_status "$KEY_A" "$ID" running 30
check "start: the guest boots a third time" wait_for 90 "3 boots" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -ge 3 ]"

# kill -9 of the agent: libvirt is its memory; nothing is redone.
kill -9 "$AGENT"; wait "$AGENT" 2>/dev/null
qemu_agent
sleep 3
check "after kill -9 and restart: still running" wait_status "$KEY_A" "$ID" running 20
eq "after kill -9 and restart: not rebooted again" "$(boots)" 3
eq "after kill -9 and restart: still one domain" "$(own_domains | wc -l)" 1
check "after kill -9 and restart: libvirt still has it running" bash -c "[ \"\$($V domstate $DOM)\" == running ]"

# Powered off behind Tasman's back: an idle agent re-reads libvirt every
# observe_interval_ms (it asks the broker to hold its poll no longer) and
# starts the guest again, as the desired state says running.
starts() { grep -c ": start$" "$T/agent.log"; }
STARTS=$(starts)
$V destroy "$DOM" >/dev/null
check "destroyed outside Tasman: the agent starts it again" wait_for 60 "4 boots" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -ge 4 ]"
check "destroyed outside Tasman: running again" wait_status "$KEY_A" "$ID" running 30
eq "the agent logged one start more" "$(starts)" $((STARTS + 1))

kill -9 "$AGENT"; wait "$AGENT" 2>/dev/null
KEY=$KEY_A api DELETE "/v1/vps/$ID"
eq "delete while the agent is down -> 204" "$CODE" 204
qemu_agent
check "agent back: the deleted VPS's domain is gone" wait_for 30 "undefined" bash -c "! $V domstate $DOM"
exit 0
