# A real guest under libvirtd + QEMU (TCG): a Debian kernel and a busybox
# initramfs built by tests/fixtures/mkguest.sh boot through the API, with
# the catalog's image fetched by the agent (file://, checked on its
# SHA-256) under a qcow2 overlay and a cloud-init seed; the guest's serial
# console shows our marker, the first line of its disk, and its seed. Then
# reboot, shutdown and start, rebuild, kill -9 of the agent: no duplicate,
# nothing restarted, and a VPS deleted while the agent was down is gone,
# disk and seed with it. An image that does not match its checksum ends in
# error, with nothing left behind.
source "$(dirname "$0")/lib.sh"

V="virsh -q -c qemu:///system"
GUEST=$ROOT/build/guest
MARK=tasman-e2e-$RANDOM$RANDOM

"$ROOT/scripts/start-libvirt" || fatal "libvirtd and virtlogd start (needs root and the libvirt packages)"
ok "libvirtd answers on qemu:///system"
"$ROOT/tests/fixtures/mkguest.sh" "$GUEST" || fatal "guest kernel + initramfs build"
ok "guest kernel and initramfs built from Debian packages"
"$ROOT/tests/fixtures/mkdisk.sh" "$GUEST" "$GUEST/disk.img" || fatal "bootable disk image build"
ok "a bootable disk image (MBR, syslinux, the kernel) built from Debian packages"

# The test images have no boot loader: the agent boots them with this
# kernel and initramfs (boot_dir), their disk is the catalog's image.
for slug in debian-12 broken; do
        mkdir -p "$T/boot/$slug"
        cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/boot/$slug/"
        echo "console=ttyS0 tasman.marker=$MARK" >"$T/boot/$slug/cmdline"
done
# The host's rescue system: the same kernel and initramfs, another marker.
mkdir -p "$T/rescue"
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/rescue/"
echo "console=ttyS0 tasman.marker=rescue-system" >"$T/rescue/cmdline"
mkdir -p "$T/hv"
chmod -R a+rX "$T"
POOL=tasman-e2e-$$

# Whatever happens, remove the domains this test made (named by the console
# logs in our own state dir), and nothing else.
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
        return 0
}
CLEANUPS+=(remove_own)

start_broker || fatal "broker starts"
qemu_agent() {
        "$BUILD/tasman-agent" --broker="$AGENT_URL" --libvirt_uri=qemu:///system --manage_network=0 \
                --host_id="qemu-$$" --state_dir="$T/hv" --domain_type=qemu \
                --shutdown_timeout_ms=3000 --vcpus=2 --ram_mb=4096 --disk_gb=100 \
                --boot_dir="$T/boot" --pool_ssd="$POOL-ssd" --pool_hdd="$POOL-hdd" \
                --rescue_dir="$T/rescue" \
                >>"$T/agent.log" 2>&1 &
        AGENT=$!
        PIDS+=("$AGENT")
}
qemu_agent
check "the agent joins" wait_node_up "qemu-$$"
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
check "guest got its hostname from its cloud-init seed" grep -q "TASMAN-GUEST-BOOTED hostname=guest1 " "$CONSOLE"
check "guest reads the catalog's image through its disk" grep -q "TASMAN-DISK TASMAN-TEST-IMAGE debian-12" "$CONSOLE"
check "guest's seed has its instance id" grep -q "TASMAN-SEED instance-id: .*$DOM-r0" "$CONSOLE"
check "guest's seed has our cloud-config" grep -q "TASMAN-SEED-USER #cloud-config" "$CONSOLE"
eq "booted once" "$(boots)" 1
DISK=$T/hv/disks/ssd/$DOM.qcow2
SEED=$T/hv/seeds/$DOM.iso
SHA=$(sha256sum "$T/catalog/debian-12.raw" | cut -d' ' -f1)
check "the image is cached once, under its SHA-256" test -f "$T/hv/images/$SHA"
check "the disk is a qcow2 overlay on the cached image" bash -c \
        "qemu-img info -U --output=json '$DISK' | jq -e '.format == \"qcow2\" and .[\"backing-filename\"] == \"$T/hv/images/$SHA\" and .[\"virtual-size\"] == 25*1024*1024*1024' >/dev/null"
check "the disk is a volume of the agent's pool" bash -c "$V vol-list $POOL-ssd | grep -q $DOM.qcow2"
check "the seed is an ISO labelled cidata" bash -c "isoinfo -d -i '$SEED' | grep -q '^Volume id: cidata'"

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

# Power off: at once, no graceful shutdown (the guest prints nothing).
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"poweroff"}'
eq "poweroff -> 202" "$CODE" 202
check "poweroff: stopped" wait_status "$KEY_A" "$ID" stopped 20
eq "poweroff: libvirt agrees" "$($V domstate "$DOM")" "shut off"
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"start"}'
check "start after poweroff: running" wait_status "$KEY_A" "$ID" running 30

# Resize: stopped, applied, disk grown, started again.
B=$(boots)
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"resize","size":"standard-2vcpu-4gb","cpu_cap":50}'
eq "resize -> 202" "$CODE" 202
eq "resize: the VPS says its new size" "$(jget .data.size)" standard-2vcpu-4gb
check "resize: running again" wait_status "$KEY_A" "$ID" running 60
eq "resize: libvirt has 2 vCPUs" "$($V dominfo "$DOM" | awk '/^CPU\(s\)/ {print $2}')" 2
eq "resize: libvirt has 4 GiB" "$($V dominfo "$DOM" | awk '/^Max memory/ {print $3}')" 4194304
check "resize: each vCPU capped at 50% (cputune quota)" bash -c "$V dumpxml $DOM | grep -q '<quota>50000</quota>'"
eq "resize: the disk grew to 80 GiB" "$(qemu-img info -U --output=json "$DISK" | jq '.["virtual-size"]')" $((80 << 30))
check "resize: the guest booted again" wait_for 90 "boot after resize" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -gt $B ]"
check "resize: the guest sees the bigger disk" wait_for 30 "80 GiB vda" grep -q "vda.*(85.9 GB/80.0 GiB)" "$CONSOLE"
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"resize","size":"standard-1vcpu-1gb"}'
eq "resize to a smaller disk -> 422" "$CODE" 422
match "it says disks never shrink" "$(jget .error.message)" "never shrink"

# Rescue: the host's rescue system boots with the guest's disk; and back.
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"rescue"}'
eq "rescue -> 202" "$CODE" 202
eq "rescue: the VPS says so" "$(jget .data.rescue)" true
check "rescue: the rescue system boots" wait_for 90 "rescue marker" grep -q "cmdline-marker=rescue-system" "$CONSOLE"
check "rescue: running" wait_status "$KEY_A" "$ID" running 30
check "rescue: the guest's disk is attached" bash -c "tail -n 20 $CONSOLE | grep -q 'TASMAN-DISK TASMAN-TEST-IMAGE debian-12'"
R=$(grep -c "cmdline-marker=$MARK" "$CONSOLE")
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"unrescue"}'
eq "unrescue -> 202" "$CODE" 202
check "unrescue: its own system boots again" wait_for 90 "own marker" bash -c "[ \$(grep -c 'cmdline-marker=$MARK' $CONSOLE) -gt $R ]"
check "unrescue: running" wait_status "$KEY_A" "$ID" running 30

# Snapshots. The guest counts its boots on its disk (TASMAN-DISK-STATE
# prints what it read; it then writes one more): a snapshot keeps the
# count, a restore brings it back.
state() { grep -a "TASMAN-DISK-STATE" "$CONSOLE" | tail -1 | sed 's/.*TASMAN-DISK-STATE //' | tr -cd ' -~'; }
lv_snaps() { $V snapshot-list "$DOM" --name | grep -c '^tasman-snap-'; }
B=$(boots)
KEY=$KEY_A api POST "/v1/vps/$ID/snapshots" '{"name":"before"}'
eq "offline snapshot -> 202" "$CODE" 202
eq "it is being created" "$(jget .data.status)" creating
SID=$(jget .data.id)
eq "its Location" "$(hdr Location)" "/v1/vps/$ID/snapshots/$SID"
check "offline snapshot: ready" wait_snap "$KEY_A" "$ID" "$SID" ready 90
check "offline snapshot: the guest was shut down for it and booted again" \
        wait_for 90 "a boot after the snapshot" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -gt $B ]"
check "offline snapshot: running again" wait_status "$KEY_A" "$ID" running 30
eq "libvirt has one snapshot of it" "$(lv_snaps)" 1
check "it is an internal snapshot of the guest's qcow2 disk" bash -c \
        "qemu-img snapshot -U -l '$DISK' | grep -q ' tasman-snap-'"
SNAPPED=$(state) # what the disk held when the snapshot was made
match "the guest's disk holds a boot count" "$SNAPPED" "^writes=[0-9]+$"
KEY=$KEY_A api GET "/v1/vps/$ID/snapshots"
eq "listed" "$(jget '[.data[] | select(.id == "'"$SID"'") | .status] | join(",")')" ready

B=$(boots)
KEY=$KEY_A api POST "/v1/vps/$ID/snapshots" '{"name":"live","online":true}'
eq "online snapshot -> 202" "$CODE" 202
LSID=$(jget .data.id)
check "online snapshot: ready" wait_snap "$KEY_A" "$ID" "$LSID" ready 60
eq "online snapshot: the guest was not restarted" "$(boots)" "$B"
eq "online snapshot: libvirt has two" "$(lv_snaps)" 2
check "online snapshot: running throughout" bash -c "[ \"\$($V domstate $DOM)\" == running ]"
check "the agent logged how long each took" grep -q "snapshot [0-9]* made in [0-9]* ms" "$T/agent.log"

KEY=$KEY_A api PATCH "/v1/vps/$ID/snapshots/$SID" '{"name":"before-rename"}'
eq "rename -> 200" "$CODE" 200
eq "renamed" "$(jget .data.name)" before-rename

# Boot once more (the count moves on), then restore: the count is back.
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"reboot"}'
check "reboot after the snapshot" wait_for 90 "one more boot" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -gt $B ]"
check "running" wait_status "$KEY_A" "$ID" running 30
check "the disk moved on" bash -c "[ \"\$(grep -a TASMAN-DISK-STATE $CONSOLE | tail -1 | sed 's/.*TASMAN-DISK-STATE //' | tr -cd ' -~')\" != '$SNAPPED' ]"
B=$(boots)
KEY=$KEY_A api POST "/v1/vps/$ID/snapshots/$SID/restore" '{}'
eq "restore -> 202" "$CODE" 202
eq "restore: the VPS says so" "$(jget .data.status)" restoring
check "restore: running again" wait_status "$KEY_A" "$ID" running 90
check "restore: the guest booted again" wait_for 90 "boot after restore" bash -c "[ \$(grep -c TASMAN-BOOT-COUNT $CONSOLE) -gt $B ]"
eq "restore: the disk is as it was in the snapshot" "$(state)" "$SNAPPED"
eq "restore: still its size (2 vCPUs)" "$($V dominfo "$DOM" | awk '/^CPU\(s\)/ {print $2}')" 2
eq "restore: the disk keeps its 80 GiB" "$(qemu-img info -U --output=json "$DISK" | jq '.["virtual-size"]')" $((80 << 30))
eq "restore: both snapshots stay" "$(lv_snaps)" 2

KEY=$KEY_A api DELETE "/v1/vps/$ID/snapshots/$LSID"
eq "delete a snapshot -> 202" "$CODE" 202
check "deleted: gone from the API" wait_snap "$KEY_A" "$ID" "$LSID" gone 30
eq "deleted: gone from libvirt" "$(lv_snaps)" 1
check "still running" wait_status "$KEY_A" "$ID" running 10

# Rebuild: a new disk from the image and a new seed (a new instance id,
# so cloud-init runs again).
echo "scribble" | dd of="$DISK" bs=1 seek=1000000 conv=notrunc status=none 2>/dev/null
KEY=$KEY_A api POST "/v1/vps/$ID/actions" '{"action":"rebuild"}'
eq "rebuild -> 202" "$CODE" 202
check "rebuild: the guest boots with a new seed" wait_for 90 "r1 seed" grep -q "TASMAN-SEED instance-id: .*$DOM-r1" "$CONSOLE"
check "after rebuild: running" wait_status "$KEY_A" "$ID" running 30
check "after rebuild: a fresh overlay (nothing written in it yet but the guest's boot)" bash -c \
        "[ \$(qemu-img info -U --output=json '$DISK' | jq '.[\"actual-size\"]') -lt 1000000 ]"
eq "after rebuild: still one domain" "$(own_domains | wc -l)" 1
eq "after rebuild: its snapshots went with the old disk" "$(lv_snaps)" 0
check "after rebuild: the API lists none" wait_for 30 "no snapshots" bash -c \
        "curl -fs -H 'Authorization: Bearer $KEY_A' '$API/v1/vps/$ID/snapshots' | jq -e '.data | length == 0'"

kill -9 "$AGENT"; wait "$AGENT" 2>/dev/null
KEY=$KEY_A api DELETE "/v1/vps/$ID"
eq "delete while the agent is down -> 204" "$CODE" 204
qemu_agent
check "agent back: the deleted VPS's domain is gone" wait_for 30 "undefined" bash -c "! $V domstate $DOM"
check "its disk is gone" test ! -e "$DISK"
check "its seed is gone" test ! -e "$SEED"
check "the cached image stays" test -f "$T/hv/images/$SHA"

# An image with a boot loader, as real cloud images are: no boot_dir entry,
# the guest boots from its own disk (BIOS, MBR, syslinux, the kernel).
mkdir -p "$T/catalog"
cp "$GUEST/disk.img" "$T/catalog/bootable.raw"
ctl image add bootable --name "Bootable test disk" --url "file://$T/catalog/bootable.raw" --format raw \
        --sha256 "$(sha256sum "$T/catalog/bootable.raw" | cut -d' ' -f1)" >/dev/null
KEY=$KEY_A api POST /v1/vps '{"name":"diskboot","size":"standard-1vcpu-1gb","image":"bootable"}'
eq "create from a bootable disk image -> 201" "$CODE" 201
DID=$(jget .data.id)
check "it runs" wait_status "$KEY_A" "$DID" running 60
DDOM=$(own_domains | sort -t- -k2 -n | tail -1)
check "its domain boots from its disk (no kernel given)" bash -c "! $V dumpxml $DDOM | grep -q '<kernel>'"
check "the boot loader on its disk started the kernel" wait_for 120 "disk-boot marker" \
        grep -q "cmdline-marker=disk-boot" "$T/hv/console/$DDOM.log"
check "it took its host name from its seed" grep -q "TASMAN-GUEST-BOOTED hostname=diskboot " "$T/hv/console/$DDOM.log"

# A new VPS from that guest's snapshot: its disk a copy of the snapshot
# (an overlay on the same cached image), on the same host, booting the
# copied system with its own host name.
KEY=$KEY_A api POST "/v1/vps/$DID/snapshots" '{"name":"golden","online":true}'
GSID=$(jget .data.id)
check "snapshot of the disk-booted guest: ready" wait_snap "$KEY_A" "$DID" "$GSID" ready 60
DSTATE=$(grep -a "TASMAN-DISK-STATE" "$T/hv/console/$DDOM.log" | tail -1 | sed 's/.*TASMAN-DISK-STATE //' | tr -cd ' -~')
KEY=$KEY_A api POST /v1/vps "{\"name\":\"cloned\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":\"$GSID\"}"
eq "create from a snapshot -> 201, of its image" "$CODE/$(jget .data.image)" 201/bootable
CID=$(jget .data.id)
check "the VPS from a snapshot runs" wait_status "$KEY_A" "$CID" running 90
CDOM=$(own_domains | sort -t- -k2 -n | tail -1)
check "the agent copied the snapshot into its disk" grep -q "vm ${CDOM#tasman-}: disk copied from snapshot" "$T/agent.log"
check "its disk is an overlay on the same cached image" bash -c \
        "qemu-img info -U --output=json '$T/hv/disks/ssd/$CDOM.qcow2' | jq -e '.[\"backing-filename\"] | startswith(\"$T/hv/images/\")' >/dev/null"
check "it boots the copied system" wait_for 120 "disk-boot marker" grep -q "cmdline-marker=disk-boot" "$T/hv/console/$CDOM.log"
check "with its own host name" grep -q "TASMAN-GUEST-BOOTED hostname=cloned " "$T/hv/console/$CDOM.log"
# the snapshot's disk counted one more boot than it had shown (what the
# source printed at its boot, plus that boot's own write)
n=$(sed -n 's/^writes=//p' <<<"$DSTATE")
eq "its disk holds what the snapshot held" "$(grep -a TASMAN-DISK-STATE "$T/hv/console/$CDOM.log" | head -1 | sed 's/.*TASMAN-DISK-STATE //' | tr -cd ' -~')" "writes=$(( ${n:-0} + 1 ))"

# An image whose file does not match its checksum: error, nothing made.
printf 'not the image\n' >"$T/catalog/broken.raw"
ctl image add broken --name Broken --url "file://$T/catalog/broken.raw" --format raw \
        --sha256 0000000000000000000000000000000000000000000000000000000000000000 >/dev/null
KEY=$KEY_A api POST /v1/vps '{"name":"broken1","size":"standard-1vcpu-1gb","image":"broken"}'
eq "create from a broken image -> 201" "$CODE" 201
BID=$(jget .data.id)
check "it ends in error" wait_status "$KEY_A" "$BID" error 60
match "with the reason" "$(KEY=$KEY_A api GET "/v1/vps/$BID"; jget .data.error)" "checksum"
check "no domain for it" bash -c "! $V domstate tasman-$BID >/dev/null 2>&1"
check "no disk for it" test ! -e "$T/hv/disks/ssd/tasman-$BID.qcow2"
check "no seed for it" test ! -e "$T/hv/seeds/tasman-$BID.iso"
check "nothing partial in the cache, nor the broken file" bash -c "! ls '$T/hv/images' | grep -Ev '^[0-9a-f]{64}\$' && [ ! -e '$T/hv/images/0000000000000000000000000000000000000000000000000000000000000000' ]"
exit 0
