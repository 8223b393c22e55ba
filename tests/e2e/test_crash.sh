# Crash safety of the agent, by fault injection: the agent kills itself
# (SIGKILL) at each step of making, rebuilding and deleting a guest on a
# real libvirtd; started again, it converges, and there is exactly what
# there should be: one domain, one disk, one seed per live guest, nothing
# for a deleted one, nothing partial anywhere.
source "$(dirname "$0")/lib.sh"

V="virsh -q -c qemu:///system"
GUEST=$ROOT/build/guest
"$ROOT/scripts/start-libvirt" || fatal "libvirtd and virtlogd start (needs root and the libvirt packages)"
"$ROOT/tests/fixtures/mkguest.sh" "$GUEST" || fatal "guest kernel + initramfs build"
for slug in debian-12 ubuntu-24.04; do
        mkdir -p "$T/boot/$slug"
        cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$T/boot/$slug/"
        echo "console=ttyS0" >"$T/boot/$slug/cmdline"
done
mkdir -p "$T/hv"
chmod -R a+rX "$T"
POOL=tasman-crash-$$

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
AGENT=
agent() { # agent [CRASH_POINT] (FAIL_AT=POINT: fail there every time)
        TASMAN_AGENT_CRASH_AT=${1:-} TASMAN_AGENT_FAIL_AT=${FAIL_AT:-} "$BUILD/tasman-agent" --broker="$AGENT_URL" --manage_network=0 \
                --libvirt_uri=qemu:///system --host_id="crash-$$" --state_dir="$T/hv" \
                --domain_type=qemu --shutdown_timeout_ms=1000 --vcpus=4 --ram_mb=8192 \
                --disk_gb=1000 --boot_dir="$T/boot" --pool_ssd="$POOL-ssd" --pool_hdd="$POOL-hdd" \
                --observe_interval_ms=1000 >>"$T/agent.log" 2>&1 &
        AGENT=$!
        PIDS+=("$AGENT")
}
# The agent crashes at the point (it was asked to), then comes back clean.
crashes_then_recovers() { # POINT
        local end=$((SECONDS + 60))
        while kill -0 "$AGENT" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
        if kill -0 "$AGENT" 2>/dev/null; then
                echo "# the agent did not reach $1"
                return 1
        fi
        wait "$AGENT" 2>/dev/null
        grep -q "crashing at $1" "$T/agent.log" || return 1
        agent
}
KEY=$(new_account crash) || fatal "account"

vols() { $V vol-list "$POOL-ssd" 2>/dev/null | awk '{print $1}' | grep '^tasman-' | sort | tr '\n' ' '; }
seeds() { ls "$T/hv/seeds" 2>/dev/null | sort | tr '\n' ' '; }
doms() { $V list --all --name | grep "^tasman-" | while read -r d; do [ -e "$T/hv/console/$d.log" ] && echo "$d"; done | sort | tr '\n' ' '; }
# Exactly these guests (ids) exist, each whole, and nothing else of ours.
exactly() { # DESCRIPTION ID...
        local d=$1 want_v="" want_s="" want_d="" id; shift
        for id in "$@"; do
                want_v+="tasman-$id.qcow2 "; want_s+="tasman-$id.iso "; want_d+="tasman-$id "
        done
        eq "$d: domains" "$(doms)" "$want_d"
        eq "$d: disks" "$(vols)" "$want_v"
        eq "$d: seeds" "$(seeds)" "$want_s"
        check "$d: nothing partial in the image cache" bash -c "! ls '$T/hv/images' | grep -q part"
}

stop_agent() { if [ -n "$AGENT" ]; then kill "$AGENT"; wait "$AGENT" 2>/dev/null; fi; }
agent
check "the agent joins" wait_node_up "crash-$$"
LIVE=()
n=0
for point in image-ready disk-created seed-built defined before-start; do
        n=$((n + 1))
        stop_agent
        agent "$point"
        KEY=$KEY api POST /v1/vps "{\"name\":\"c$n\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}"
        ID=$(jget .data.id)
        check "create, crash at $point: the agent crashed there and restarts" crashes_then_recovers "$point"
        check "create, crash at $point: the VPS runs after the restart" wait_status "$KEY" "$ID" running 60
        LIVE+=("$n")
        exactly "create, crash at $point" "${LIVE[@]}"
done
IDS=()
for i in $(seq 1 "$n"); do KEY=$KEY api GET "/v1/vps?name=c$i"; IDS+=("$(jget '.data[0].id')"); done

# rebuild of guest 1, crashing half-way each time
for point in rebuild-storage-removed rebuild-undefined; do
        stop_agent
        agent "$point"
        KEY=$KEY api POST "/v1/vps/${IDS[0]}/actions" '{"action":"rebuild"}'
        eq "rebuild, crash at $point -> 202" "$CODE" 202
        check "rebuild, crash at $point: the agent crashed there and restarts" crashes_then_recovers "$point"
        check "rebuild, crash at $point: running after the restart" wait_status "$KEY" "${IDS[0]}" running 60
        KEY=$KEY api GET "/v1/vps/${IDS[0]}"
        exactly "rebuild, crash at $point" "${LIVE[@]}"
done
check "the rebuilt guest has a new seed (instance id r2)" bash -c \
        "isoinfo -R -x /meta-data -i '$T/hv/seeds/tasman-1.iso' | grep -q 'tasman-1-r2'"

# delete of guest 2, crashing after its disk and seed went
stop_agent
agent delete-storage-removed
KEY=$KEY api DELETE "/v1/vps/${IDS[1]}"
eq "delete -> 204" "$CODE" 204
check "delete, crash after its storage went: the agent crashed there and restarts" crashes_then_recovers delete-storage-removed
check "delete: the domain goes after the restart" wait_for 30 "domain gone" bash -c "! $V domstate tasman-2 >/dev/null 2>&1"
LIVE=(1 3 4 5)
exactly "delete, crash after its storage went" "${LIVE[@]}"

# leftovers made behind the agent's back (as a crash inside a step would
# leave them) are swept: a disk and a seed of a guest nobody wants
$V vol-create-as "$POOL-ssd" tasman-999.qcow2 1M --format qcow2 >/dev/null
touch "$T/hv/seeds/tasman-999.iso" "$T/hv/seeds/tasman-3.iso.tmp"
$V vol-create-as "$POOL-ssd" not-ours.qcow2 1M --format qcow2 >/dev/null
check "leftovers of ours are swept" wait_for 20 "swept" bash -c \
        "[ \"\$(ls $T/hv/seeds | sort | tr '\n' ' ')\" = 'tasman-1.iso tasman-3.iso tasman-4.iso tasman-5.iso ' ]"
exactly "after the sweep" "${LIVE[@]}"
check "a volume that is not ours is left alone" bash -c "$V vol-list $POOL-ssd | grep -q not-ours.qcow2"
$V vol-delete --pool "$POOL-ssd" not-ours.qcow2 >/dev/null

# Snapshots of guest 3, crashing at each step: no duplicate, no orphan, and
# the store and libvirt agree on what exists.
G=${IDS[2]}
lv_snaps() { $V snapshot-list tasman-3 --name | grep '^tasman-snap-' | sort | tr '\n' ' '; }
api_snaps() { # the ids libvirt should have: every snapshot the API lists
        KEY=$KEY api GET "/v1/vps/$G/snapshots"; jget '.data | length'
}
SIDS=()
k=0
for point in before-snapshot snapshot-made; do
        k=$((k + 1))
        stop_agent
        agent "$point"
        KEY=$KEY api POST "/v1/vps/$G/snapshots" "{\"name\":\"s$k\"}"
        eq "snapshot, crash at $point -> 202" "$CODE" 202
        SIDS+=("$(jget .data.id)")
        check "snapshot, crash at $point: the agent crashed there and restarts" crashes_then_recovers "$point"
        check "snapshot, crash at $point: ready after the restart" wait_snap "$KEY" "$G" "${SIDS[-1]}" ready 60
        check "snapshot, crash at $point: running again" wait_status "$KEY" "$G" running 60
        eq "snapshot, crash at $point: libvirt has as many as the API" "$($V snapshot-list tasman-3 --name | grep -c '^tasman-snap-')" "$(api_snaps)"
        exactly "snapshot, crash at $point" "${LIVE[@]}"
done
for point in before-restore restore-reverted; do
        stop_agent
        agent "$point"
        KEY=$KEY api POST "/v1/vps/$G/snapshots/${SIDS[0]}/restore" '{}'
        eq "restore, crash at $point -> 202" "$CODE" 202
        check "restore, crash at $point: the agent crashed there and restarts" crashes_then_recovers "$point"
        check "restore, crash at $point: running after the restart" wait_status "$KEY" "$G" running 60
        eq "restore, crash at $point: both snapshots stay" "$($V snapshot-list tasman-3 --name | grep -c '^tasman-snap-')" 2
        exactly "restore, crash at $point" "${LIVE[@]}"
done
# A snapshot that fails: no phantom record, no snapshot, the guest runs.
BEFORE=$(lv_snaps)
stop_agent
FAIL_AT=snapshot agent
KEY=$KEY api POST "/v1/vps/$G/snapshots" '{"name":"doomed","online":true}'
eq "a failing snapshot -> 202" "$CODE" 202
FSID=$(jget .data.id)
check "a failing snapshot: its record goes" wait_snap "$KEY" "$G" "$FSID" gone 60
eq "a failing snapshot: libvirt has no more than before" "$(lv_snaps)" "$BEFORE"
eq "a failing snapshot: the API lists what libvirt has" "$(api_snaps)" 2
check "a failing snapshot: the guest still runs" wait_status "$KEY" "$G" running 20
check "a failing snapshot: the agent said why" grep -q "cannot make snapshot" "$T/agent.log"
stop_agent
agent
# Deleting a VPS with snapshots: domain, disk, seed and snapshots go.
KEY=$KEY api DELETE "/v1/vps/$G"
eq "delete a VPS with snapshots -> 204" "$CODE" 204
check "its domain goes, snapshots and all" wait_for 30 "domain gone" bash -c "! $V domstate tasman-3 >/dev/null 2>&1"
LIVE=(1 4 5)
exactly "delete of a VPS with snapshots" "${LIVE[@]}"

# A template's cloud-config reaches the guest: in its seed, after ours.
SECRET=Sup3rSecret-$RANDOM$RANDOM
KEY=$KEY api POST /v1/templates/deploy "{\"template\":\"redis\",\"name\":\"cache1\",\"version\":\"7.0\",\"config\":{\"redis_password\":\"$SECRET\"}}"
eq "deploy a template -> 201" "$CODE" 201
TID=$(jget .data.vps_id)
check "the template's VPS runs" wait_status "$KEY" "$TID" running 60
TN=$(KEY=$KEY api GET "/v1/vps?name=cache1" >/dev/null; ls "$T/hv/seeds" | sed -n 's/^tasman-\([0-9]*\)\.iso$/\1/p' | sort -n | tail -1)
UD=$(isoinfo -R -x /user-data -i "$T/hv/seeds/tasman-$TN.iso")
match "its seed's user-data is multipart: ours, then the template's" "$UD" "multipart/mixed"
match "the template's cloud-config is in it" "$UD" "# Tasman template redis 7.0"
match "with the secret the guest needs" "$UD" "$SECRET"
exit 0
