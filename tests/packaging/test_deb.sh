# The Debian packages for real: build them (two versions), lint them, install
# them with apt into a fresh debootstrap'd bookworm chroot (dependencies from
# Debian's archive), run the broker and an agent from them, create a VPS,
# upgrade, check that config and data survived, then purge.
source "$(dirname "$0")/../e2e/lib.sh"

V1=0.1.0
V2=0.1.1
C=$ROOT/build/deb-chroot
DEBS=$ROOT/build/deb

# --- build and lint
(cd "$ROOT" && DEB_VERSION= packaging/build-deb >/dev/null) || fatal "packages $V1 build"
(cd "$ROOT" && DEB_VERSION=$V2 packaging/build-deb >/dev/null) || fatal "packages $V2 build"
ok "dpkg-buildpackage builds tasman-broker, tasman-agent, tasmanctl ($V1 and $V2)"
lint=$(lintian --allow-root "$DEBS"/tasman-broker_${V1}_amd64.deb "$DEBS"/tasman-agent_${V1}_amd64.deb \
        "$DEBS"/tasmanctl_${V1}_amd64.deb 2>&1)
eq "lintian: no errors" "$(grep -c '^E:' <<<"$lint")" 0
eq "lintian: no warnings" "$(grep -c '^W:' <<<"$lint")" 0
[ -n "$lint" ] && echo "$lint" | sed 's/^/# /'
check "tasman-agent depends on libvirt's daemon and QEMU" bash -c \
        "dpkg-deb -f $DEBS/tasman-agent_${V1}_amd64.deb Depends | grep -q 'libvirt-daemon-system.*qemu-system-x86'"
check "library dependencies come from dh_shlibdeps" bash -c \
        "dpkg-deb -f $DEBS/tasman-broker_${V1}_amd64.deb Depends | grep -q 'libmicrohttpd12'"

# --- a fresh bookworm
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || fatal "no Debian mirror configured in /etc/apt"
umount_all() {
        for m in proc dev/pts; do mountpoint -q "$C/$m" && umount -l "$C/$m"; done
        return 0
}
CLEANUPS+=(umount_all)
umount_all
rm -rf "$C"
CACHE=$ROOT/build/deb-cache/bookworm-minbase.tar
if [ -f "$CACHE" ]; then
        mkdir -p "$C" && tar -xf "$CACHE" -C "$C"
else
        echo "# debootstrap --variant=minbase bookworm (a few minutes)"
        debootstrap --variant=minbase bookworm "$C" "$MIRROR" >"$T/debootstrap.log" 2>&1 ||
                { tail -20 "$T/debootstrap.log"; fatal "debootstrap bookworm"; }
        mkdir -p "$(dirname "$CACHE")" && tar -cf "$CACHE" -C "$C" .
fi
ok "fresh bookworm chroot (debootstrap --variant=minbase)"
mount -t proc proc "$C/proc"
cp /etc/resolv.conf "$C/etc/resolv.conf"
# No services are started inside the chroot by maintainer scripts.
printf '#!/bin/sh\nexit 101\n' >"$C/usr/sbin/policy-rc.d" && chmod +x "$C/usr/sbin/policy-rc.d"
in_c() { chroot "$C" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
mkdir -p "$C/tmp/debs" && cp "$DEBS"/*_${V1}_amd64.deb "$DEBS"/*_${V2}_amd64.deb "$C/tmp/debs/"
in_c apt-get update -qq >"$T/apt.log" 2>&1 || fatal "apt-get update in the chroot"
echo "# apt-get install of the packages and their dependencies in the chroot"
in_c apt-get install -y -qq --no-install-recommends /tmp/debs/tasman-broker_${V1}_amd64.deb \
        /tmp/debs/tasman-agent_${V1}_amd64.deb /tmp/debs/tasmanctl_${V1}_amd64.deb systemd \
        >>"$T/apt.log" 2>&1 || { tail -30 "$T/apt.log"; fatal "apt installs the packages"; }
ok "apt installs the three packages with their dependencies from Debian"

# --- what install made
eq "system user tasman" "$(in_c getent passwd tasman | cut -d: -f1)" tasman
eq "state directory owned by tasman" "$(in_c stat -c '%U %a' /var/lib/tasman)" "tasman 750"
eq "broker.conf readable by the broker only" "$(in_c stat -c '%U:%G %a' /etc/tasman/broker.conf)" "root:tasman 640"
check "config files are conffiles" bash -c "chroot $C dpkg-query -W -f='\${Conffiles}' tasman-broker tasman-agent | grep -q /etc/tasman/agent.conf"
check "every broker key is in broker.conf, commented" bash -c \
        "for k in listen admin_listen agent_listen db admin_token hold_ms host_timeout_ms http_threads max_body max_agents rate_limits rate_limit_keys list_cache cpu_overcommit_pct ram_overcommit_pct disk_overcommit_pct placement pdns_url pdns_key pdns_server pdns_timeout_ms dns_zone dns_interval_ms dns_ttl log_level; do grep -q \"^#\$k =\" $C/etc/tasman/broker.conf || exit 1; done"
check "every agent key is in agent.conf, commented" bash -c \
        "for k in \$(chroot $C /usr/sbin/tasman-agent --help | sed -n 's/^  --\([a-z_]*\)=.*/\1/p'); do grep -q \"^#\$k =\" $C/etc/tasman/agent.conf || { echo \"# missing \$k\"; exit 1; }; done"
check "systemd-analyze verify passes on the units" in_c systemd-analyze verify --man=no \
        /lib/systemd/system/tasman-broker.service /lib/systemd/system/tasman-agent.service
check "the units are Type=notify" grep -q '^Type=notify' "$C/lib/systemd/system/tasman-broker.service"
check "man pages installed" test -f "$C/usr/share/man/man8/tasman-broker.8.gz"

# --- run it: broker as its user, agent on the test driver
cat >>"$C/etc/tasman/broker.conf" <<CONF
listen = 127.0.0.1:$API_PORT
admin_listen = 127.0.0.1:$ADMIN_PORT
agent_listen = $AGENT_URL
CONF
run_broker() {
        chroot --userspec=tasman:tasman "$C" /usr/sbin/tasman-broker --config /etc/tasman/broker.conf \
                >>"$T/broker.log" 2>&1 &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        wait_for 30 "broker in the chroot answers" curl -fs "$ADMIN/v1/accounts" -o /dev/null
}
run_agent() {
        chroot "$C" /usr/sbin/tasman-agent --config /etc/tasman/agent.conf --broker="$AGENT_URL" --manage_network=0 \
                --libvirt_uri=test:///default --host_id=deb-hv --vcpus=8 --ram_mb=16384 \
                --disk_gb=100 >>"$T/agent.log" 2>&1 &
        AGENT_PID=$!
        PIDS+=("$AGENT_PID")
}
check "broker from the package starts as user tasman" run_broker
eq "it runs as tasman (uid)" "$(ps -o uid= -p "$BROKER_PID" | tr -d ' ')" "$(in_c id -u tasman)"
run_agent
ctlc() { chroot "$C" /usr/bin/tasmanctl --broker "$ADMIN" "$@"; }
check "agent from the package joins" wait_for 15 "node up" bash -c "chroot $C /usr/bin/tasmanctl --broker $ADMIN --json node list | grep -q '\"up\"'"
ctlc account create debtest >/dev/null || not_ok "tasmanctl from the package makes an account"
# the packaged config has prepaid billing on: an order needs credit
ctlc credit add debtest 10.00 >/dev/null || not_ok "tasmanctl from the package adds credit"
KEY=$(ctlc key create debtest 2>/dev/null | head -1)
# the guest's image, served from inside the chroot (tests fetch nothing from outside)
printf 'TASMAN-TEST-IMAGE debian-12\n' >"$C/srv/debian-12.raw"
truncate -s 1M "$C/srv/debian-12.raw"
check "tasmanctl image add" ctlc image add debian-12 --name "Debian 12 (test)" \
        --url file:///srv/debian-12.raw --sha256 "$(sha256sum "$C/srv/debian-12.raw" | cut -d' ' -f1)" --format raw
api POST /v1/vps '{"name":"pkg1","size":"standard-1vcpu-1gb","image":"debian-12"}'
eq "create a VPS through the packaged broker -> 201" "$CODE" 201
ID=$(jget .data.id)
check "it runs" wait_status "$KEY" "$ID" running 20
stop_pid "$AGENT_PID"; stop_pid "$BROKER_PID"

# --- upgrade keeps config and data
echo "# upgrade to $V2"
in_c apt-get install -y -qq --no-install-recommends /tmp/debs/tasman-broker_${V2}_amd64.deb \
        /tmp/debs/tasman-agent_${V2}_amd64.deb /tmp/debs/tasmanctl_${V2}_amd64.deb >>"$T/apt.log" 2>&1 ||
        { tail -20 "$T/apt.log"; not_ok "apt upgrades to $V2"; }
eq "upgraded to $V2" "$(in_c dpkg-query -W -f='${Version}' tasman-broker)" "$V2"
eq "the broker binary is $V2" "$(in_c /usr/sbin/tasman-broker --version)" "tasman-broker $V2"
check "edited config survived the upgrade" grep -q "^listen = 127.0.0.1:$API_PORT" "$C/etc/tasman/broker.conf"
check "broker from the new package starts on the old data" run_broker
run_agent
KEY=$KEY api GET "/v1/vps/$ID"
eq "the VPS survived the upgrade (same id)" "$(jget .data.id)" "$ID"
check "and runs again" wait_status "$KEY" "$ID" running 20
stop_pid "$AGENT_PID"; stop_pid "$BROKER_PID"

# --- remove keeps data, purge deletes it
in_c apt-get remove -y -qq tasman-broker >>"$T/apt.log" 2>&1
check "remove keeps the data" test -f "$C/var/lib/tasman/broker.db"
check "remove keeps the config" test -f "$C/etc/tasman/broker.conf"
in_c apt-get purge -y -qq tasman-broker tasman-agent tasmanctl >>"$T/apt.log" 2>&1
check "purge deletes the data" test ! -e "$C/var/lib/tasman"
check "purge deletes the config" test ! -e "$C/etc/tasman"
umount_all
rm -rf "$C"
exit 0
