# The VMs' DNS records in a real PowerDNS authoritative server (gsqlite3
# back-end, its HTTP API): a broker with pdns_url keeps A, AAAA and PTR
# records of VMs with public addresses, checked with dig against the
# server's DNS port; records an admin made by hand are never touched; a
# deleted VM's records go; a restarted broker finds nothing to change.
# Without a runnable pdns_server this test fails: it does not skip.
source "$(dirname "$0")/lib.sh"

SCHEMA=/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql
command -v pdns_server >/dev/null || fatal "pdns_server is installed (Debian: pdns-server)"
[ -f "$SCHEMA" ] || fatal "the gsqlite3 schema is at $SCHEMA (Debian: pdns-backend-sqlite3)"
command -v dig >/dev/null || fatal "dig is installed (Debian: bind9-dnsutils)"

ZONE=tasman.cloud
REV4=113.0.203.in-addr.arpa
REV6=5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa # 2001:db8:5::/48
PKEY=test-pdns-key-$RANDOM$RANDOM

# --- our own pdns_server: config, database and sockets in $T/pdns
PDNS_PID=
stop_pdns() { [ -n "$PDNS_PID" ] && stop_pid "$PDNS_PID"; PDNS_PID=; }
CLEANUPS+=(stop_pdns)
start_pdns() {
        local try
        mkdir -p "$T/pdns"
        sqlite3 "$T/pdns/pdns.db" <"$SCHEMA" || return 1
        for try in 1 2 3; do
                free_port PDNS_WEB_PORT && free_port PDNS_DNS_PORT || return 1
                cat >"$T/pdns/pdns.conf" <<EOF
launch=gsqlite3
gsqlite3-database=$T/pdns/pdns.db
local-address=127.0.0.1
local-port=$PDNS_DNS_PORT
socket-dir=$T/pdns
webserver=yes
webserver-address=127.0.0.1
webserver-port=$PDNS_WEB_PORT
webserver-allow-from=127.0.0.0/8
api=yes
api-key=$PKEY
security-poll-suffix=
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
EOF
                pdns_server --config-dir="$T/pdns" --daemon=no --guardian=no --disable-syslog \
                        >>"$T/pdns.log" 2>&1 &
                PDNS_PID=$!
                PURL=http://127.0.0.1:$PDNS_WEB_PORT
                if wait_for 20 "pdns_server's API" pdns GET "" && kill -0 "$PDNS_PID" 2>/dev/null; then
                        return 0
                fi
                stop_pdns
        done
        return 1
}
# pdns METHOD PATH [JSON]: the PowerDNS API; sets PCODE, PBODY
pdns() {
        local args=(-s -o "$T/pbody" -w '%{http_code}' -X "$1" -H "X-API-Key: $PKEY")
        [ -n "${3-}" ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
        rm -f "$T/pbody"
        PCODE=$(curl "${args[@]}" "$PURL/api/v1/servers/localhost$2")
        PBODY=$(cat "$T/pbody" 2>/dev/null)
        [ "${PCODE:0:1}" = 2 ]
}
# q NAME TYPE: the answer's records, sorted, one line
q() { dig +short +time=2 +tries=1 @127.0.0.1 -p "$PDNS_DNS_PORT" "$1" "$2" | sort | tr '\n' ' ' | sed 's/ $//'; }
qx() { dig +short +time=2 +tries=1 @127.0.0.1 -p "$PDNS_DNS_PORT" -x "$1" | tr '\n' ' ' | sed 's/ $//'; }
# wait_q SECONDS NAME TYPE WANT: until the answer is WANT
wait_q() { wait_for "$1" "$2 $3 = '$4'" bash -c "[ \"\$(dig +short +time=2 +tries=1 @127.0.0.1 -p $PDNS_DNS_PORT $2 $3 | sort | tr '\n' ' ' | sed 's/ \$//')\" = '$4' ]"; }
wait_qx() { wait_for "$1" "-x $2 = '$3'" bash -c "[ \"\$(dig +short +time=2 +tries=1 @127.0.0.1 -p $PDNS_DNS_PORT -x $2)\" = '$3' ]"; }
# rrset ZONE NAME TYPE: the rrset as the API shows it (compact JSON, "" if none)
rrset() { pdns GET "/zones/$1." && jq -c --arg n "$2" --arg t "$3" '.rrsets[] | select(.name == $n and .type == $t) | {records: [.records[].content], comments: [.comments[] | {account, content}]}' <<<"$PBODY"; }
serial() { pdns GET "/zones/$1." && jq -r .serial <<<"$PBODY"; }
sql() { sqlite3 -cmd ".timeout 5000" "$T/broker.db" "$@"; }
# metric NAME{LABELS}: its value on the broker's /metrics
metric() { curl -s "$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start_pdns || fatal "pdns_server starts with a gsqlite3 database and serves its API (see $T/pdns.log)"
ok "pdns_server $(pdns_server --version 2>&1 | grep -o '4\.[0-9.]*' | head -1) runs (pid $PDNS_PID), API on $PDNS_WEB_PORT, DNS on $PDNS_DNS_PORT"

for z in $ZONE $REV4 $REV6; do
        pdns POST /zones "{\"name\":\"$z.\",\"kind\":\"Native\",\"nameservers\":[\"ns1.$ZONE.\"]}"
        eq "zone $z. created through the API" "$PCODE" 201
done
# Hand-made records (no comment): one beside ours, one with the name and
# type a VM will want, one PTR in the reverse zone.
pdns PATCH "/zones/$ZONE." '{"rrsets":[
  {"name":"www.tasman.cloud.","type":"A","ttl":600,"changetype":"REPLACE","records":[{"content":"192.0.2.80","disabled":false}]},
  {"name":"web2.tasman.cloud.","type":"A","ttl":600,"changetype":"REPLACE","records":[{"content":"192.0.2.99","disabled":false}],"comments":[{"account":"admin","content":"hand-made"}]}]}'
eq "an admin's records made by hand" "$PCODE" 204
pdns PATCH "/zones/$REV4." '{"rrsets":[{"name":"14.113.0.203.in-addr.arpa.","type":"PTR","ttl":600,"changetype":"REPLACE","records":[{"content":"mail.example.net.","disabled":false}]}]}'
eq "an admin's PTR made by hand" "$PCODE" 204
# One of "ours" that nothing wants any more (a leftover): it must go.
pdns PATCH "/zones/$ZONE." '{"rrsets":[{"name":"ghost.tasman.cloud.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"203.0.113.13","disabled":false}],"comments":[{"account":"tasman","content":"tasman"}]}]}'
eq "a leftover of Tasman's" "$PCODE" 204
eq "dig answers from our pdns_server" "$(q www.$ZONE A)" 192.0.2.80

# --- a broker keeping the records, an agent for placement
free_port TILAA_PORT || fatal "a port for the Tilaa API"
TILAA=http://127.0.0.1:$TILAA_PORT
BROKER_DNS=(--pdns_url="$PURL" --pdns_key="$PKEY" --dns_zone=$ZONE --dns_interval_ms=300
        --tilaa_listen="127.0.0.1:$TILAA_PORT")
start_broker "${BROKER_DNS[@]}" || fatal "broker starts with pdns_url"
start_agent hv1
wait_node_up hv1 || fatal "agent joins"
ctl pool add tas-1 --ipv4 203.0.113.0/28 --gateway4 203.0.113.1 --ipv6 2001:db8:5::/64 \
        --gateway6 2001:db8:5::1 >/dev/null || fatal "pool for tas-1"
A=$(new_account acme pro) || fatal "account"

KEY=$A api POST /v1/vps '{"name":"web1","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "VPS web1 -> 201" "$CODE" 201
V1=$(jget .data.id)
KEY=$A api POST /v1/vps '{"name":"web2","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "VPS web2 -> 201" "$CODE" 201
V2=$(jget .data.id)
addr() { sql "SELECT n.$2 FROM nics n JOIN vms v ON v.id = n.vm_id WHERE v.name = '$1' AND v.deleted_at IS NULL AND n.network_id = 0"; }
W1_4=$(addr web1 ipv4) W1_6=$(addr web1 ipv6) W2_4=$(addr web2 ipv4) W2_6=$(addr web2 ipv6)
eq "web1 and web2 have public addresses" "$W1_4 $W1_6 $W2_4 $W2_6" "203.0.113.2 2001:db8:5::2 203.0.113.3 2001:db8:5::3"

check "A web1.$ZONE appears" wait_q 15 web1.$ZONE A "$W1_4"
check "AAAA web1.$ZONE appears" wait_q 15 web1.$ZONE AAAA "$W1_6"
check "PTR of $W1_4 appears" wait_qx 15 "$W1_4" "web1.$ZONE."
check "PTR of $W1_6 (ip6.arpa nibbles) appears" wait_qx 15 "$W1_6" "web1.$ZONE."
check "PTR of $W2_4 appears" wait_qx 15 "$W2_4" "web2.$ZONE."
check "AAAA web2.$ZONE appears" wait_q 15 web2.$ZONE AAAA "$W2_6"
check "the leftover ghost.$ZONE of Tasman's is deleted" wait_q 15 ghost.$ZONE A ""
eq "A web2.$ZONE stays the admin's (a conflict, left alone)" "$(q web2.$ZONE A)" 192.0.2.99
eq "the admin's rrset keeps its comment" "$(rrset $ZONE web2.$ZONE. A)" '{"records":["192.0.2.99"],"comments":[{"account":"admin","content":"hand-made"}]}'
eq "the admin's www.$ZONE is untouched" "$(rrset $ZONE www.$ZONE. A)" '{"records":["192.0.2.80"],"comments":[]}'
eq "the admin's PTR is untouched" "$(qx 203.0.113.14)" mail.example.net.
eq "our rrsets carry Tasman's comment" "$(rrset $ZONE web1.$ZONE. A)" "{\"records\":[\"$W1_4\"],\"comments\":[{\"account\":\"tasman\",\"content\":\"tasman\"}]}"
pdns GET "/zones/$ZONE." && eq "our TTL is dns_ttl's default, 300" "$(jq -r '.rrsets[] | select(.name == "web1.tasman.cloud." and .type == "AAAA") | .ttl' <<<"$PBODY")" 300
sleep 1 # a few more rounds
eq "the conflict is logged once, naming the rrset" "$(grep -c "dns: A web2.$ZONE. is not Tasman's" "$T/broker.log")" 1
eq "/metrics: one rrset skipped for a conflict, none for want of a zone" \
        "$(metric 'tasman_dns_rrsets_skipped{reason="conflict"}') $(metric 'tasman_dns_rrsets_skipped{reason="no_zone"}')" "1 0"
match "/metrics: rounds done, none failed" "$(metric 'tasman_dns_rounds_total{result="ok"}') $(metric 'tasman_dns_rounds_total{result="error"}')" '^[1-9][0-9]* 0$'
eq "/metrics: rrsets made (A, AAAA, AAAA, 4 PTRs) and deleted (the leftover)" \
        "$(metric 'tasman_dns_rrsets_changed_total{change="replaced"}') $(metric 'tasman_dns_rrsets_changed_total{change="deleted"}')" "7 1"

# --- an rrset of ours changed by hand is put back; nothing else is sent
mark=$(wc -c <"$T/broker.log")
since() { tail -c +"$((mark + 1))" "$T/broker.log"; }
pdns PATCH "/zones/$ZONE." '{"rrsets":[{"name":"web1.tasman.cloud.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"198.51.100.66","disabled":false}],"comments":[{"account":"tasman","content":"tasman"}]}]}'
eq "our A web1 changed behind the broker's back" "$PCODE" 204
check "the next round puts it back" wait_q 15 web1.$ZONE A "$W1_4"
eq "with one PATCH of that one rrset" "$(since | grep 'dns: zone' | sed 's/.*dns: zone //')" "$ZONE.: PATCH 1 rrsets (1 replaced, 0 deleted)"

# --- a restart changes nothing: no PATCH, same serials
sleep 1
S_FWD=$(serial $ZONE) S_R4=$(serial $REV4) S_R6=$(serial $REV6)
stop_pid "$BROKER_PID"
mark=$(wc -c <"$T/broker.log")
start_broker "${BROKER_DNS[@]}" || fatal "broker starts again"
check "the restarted broker does a first round" wait_for 15 "dns round 1" bash -c "tail -c +$((mark + 1)) $T/broker.log | grep -q 'dns: round 1 done'"
sleep 1
eq "the first round after the restart sent no PATCH" "$(since | grep 'dns: round 1 done' | grep -o '[0-9]* PATCHes')" "0 PATCHes"
eq "no PATCH at all since the restart" "$(since | grep -c 'dns: zone .*: PATCH')" 0
match "/metrics after the restart: rounds done, no PATCH" "$(metric 'tasman_dns_rounds_total{result="ok"}') $(metric tasman_dns_patches_total)" '^[1-9][0-9]* 0$'
eq "the zones' serials did not move" "$(serial $ZONE) $(serial $REV4) $(serial $REV6)" "$S_FWD $S_R4 $S_R6"

# --- deleting a VM removes its records, and only its
KEY=$A api DELETE "/v1/vps/$V1"
eq "DELETE web1 -> 204" "$CODE" 204
check "A web1.$ZONE goes" wait_q 15 web1.$ZONE A ""
check "AAAA web1.$ZONE goes" wait_q 15 web1.$ZONE AAAA ""
check "PTR of $W1_4 goes" wait_qx 15 "$W1_4" ""
check "PTR of $W1_6 goes" wait_qx 15 "$W1_6" ""
eq "web2's PTR stays" "$(qx "$W2_4")" "web2.$ZONE."
eq "the admin's records stay" "$(q www.$ZONE A) $(q web2.$ZONE A) $(qx 203.0.113.14)" "192.0.2.80 192.0.2.99 mail.example.net."
eq "the deletion went out as one PATCH per zone" "$(since | grep 'dns: zone .*: PATCH' | sed 's/.*dns: zone //' | sort | tr '\n' ';')" \
        "$REV4.: PATCH 1 rrsets (0 replaced, 1 deleted);$REV6.: PATCH 1 rrsets (0 replaced, 1 deleted);$ZONE.: PATCH 2 rrsets (0 replaced, 2 deleted);"

# --- the admin removes the conflicting record: web2 gets its A
pdns PATCH "/zones/$ZONE." '{"rrsets":[{"name":"web2.tasman.cloud.","type":"A","changetype":"DELETE"}]}'
check "once the admin's A web2 is gone, ours appears" wait_q 15 web2.$ZONE A "$W2_4"

# --- an admin takes one of ours over by dropping Tasman's comment: it is
# the admin's from then on
pdns PATCH "/zones/$ZONE." '{"rrsets":[{"name":"web2.tasman.cloud.","type":"AAAA","ttl":300,"changetype":"REPLACE","records":[{"content":"2001:db8:5::99","disabled":false}],"comments":[]}]}'
eq "web2's AAAA taken over by hand" "$PCODE" 204
conflicts_are() { [ "$(metric 'tasman_dns_rrsets_skipped{reason="conflict"}')" = "$1" ]; }
check "a round sees it as an admin's (a conflict)" wait_for 10 "1 conflict" conflicts_are 1
sleep 0.5
eq "and leaves it as the admin made it" "$(q web2.$ZONE AAAA)" 2001:db8:5::99

# --- no reverse zone for an address: its PTR is skipped, with one warning
mark=$(wc -c <"$T/broker.log")
pdns DELETE "/zones/$REV6."
eq "the ip6.arpa zone deleted by hand" "$PCODE" 204
no_zone_is() { [ "$(metric 'tasman_dns_rrsets_skipped{reason="no_zone"}')" = "$1" ]; }
check "web2's IPv6 PTR is skipped" wait_for 10 "1 without a zone" no_zone_is 1
sleep 1 # more rounds
eq "with one warning naming it" "$(since | grep -c "dns: no reverse zone on the server holds 1 PTR records (first: 3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.): they are skipped")" 1
eq "and no error" "$(since | grep -c ' error: ')" 0
eq "web2's other records stay" "$(q web2.$ZONE A) $(qx "$W2_4")" "$W2_4 web2.$ZONE."

# --- the Tilaa API's dns_name: inside the zone, A (and AAAA) and PTR under
# that name; outside it, PTR records only
ctl api-user create acme ops@acme.test --password acme-pass-1 >/dev/null || fatal "Tilaa API user"
tget() { curl -s -u ops@acme.test:acme-pass-1 "$TILAA$1"; }
TPL=$(tget /v1/templates | jq -r '.templates[] | select(.name | startswith("ubuntu-24.04")) | .id')
tadd() { # NAME DNS_NAME -> id
        curl -s -u ops@acme.test:acme-pass-1 "$TILAA/v1/virtual_machines" -d name="$1" -d dns_name="$2" \
                -d ram=1024 -d storage=20 -d storage_type=ssd -d template="$TPL" | jq -r .id
}
TV1=$(tadd shop "shop.$ZONE")
TV2=$(tadd ext shop.example.org)
addr_of() { tget "/v1/virtual_machines/$1" | jq -r ".virtual_machine.network[] | select(.family == $2) | .address"; }
S4=$(addr_of "$TV1" 4) X4=$(addr_of "$TV2" 4)
check "a Tilaa VM with dns_name shop.$ZONE gets A shop.$ZONE" wait_q 15 "shop.$ZONE" A "$S4"
check "and the PTR of its IPv4 names it" wait_qx 15 "$S4" "shop.$ZONE."
check "a dns_name outside the zone gets its PTR" wait_qx 15 "$X4" "shop.example.org."
eq "and no A record in our zone under its VM name" "$(q "ext.$ZONE" A)" ""

# --- a wrong API key: one error naming the server, not one per round
stop_pid "$BROKER_PID"
mark=$(wc -c <"$T/broker.log")
start_broker --pdns_url="$PURL" --pdns_key=wrong --dns_zone=$ZONE --dns_interval_ms=200 || fatal "broker with a wrong key starts"
sleep 2
eq "a refused key is logged once" "$(since | grep -c "dns: cannot list the zones of $PURL: 401")" 1
stop_pid "$BROKER_PID"

# a zone that is no DNS name is a configuration error
"$BUILD/tasman-broker" --db="$T/other.db" --pdns_url="$PURL" --dns_zone="bad zone" >"$T/badzone.out" 2>&1
eq "pdns_url with a bad dns_zone: exit 2" "$?" 2
check "it says what is wrong" grep -q "dns_zone 'bad zone' is not a DNS name" "$T/badzone.out"

stop_pdns
ok "pdns_server stopped"
