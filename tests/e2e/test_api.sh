# The native API end to end: broker + agent on libvirt's test driver.
# Create -> running, every action, delete, bad input, tenant isolation.
source "$(dirname "$0")/lib.sh"

start_broker || fatal "broker starts"
start_agent hv1
wait_for 10 "agent joins" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == up ]" ||
        fatal "agent joins and its node is up"
ok "broker and agent start; node hv1 is up"

A=$(new_account acme pro) && [ ${#A} -eq 44 ] || fatal "tasmanctl creates an account and a key"
B=$(new_account globex free) || fatal "second account"
ok "tasmanctl makes accounts and keys"
ctl account create acme >/dev/null 2>&1; eq "duplicate account is refused (exit 1)" "$?" 1

# --- create
KEY=$A api POST /v1/vps '{"name":"web1","size":"standard-2vcpu-4gb","image":"ubuntu-24.04"}'
eq "POST /v1/vps -> 201" "$CODE" 201
ID=$(jget .data.id)
match "id is vps_ + 13 chars" "$ID" "^vps_[0-9a-z]{13}$"
eq "name echoed" "$(jget .data.name)" web1
eq "size echoed" "$(jget .data.size)" standard-2vcpu-4gb
eq "region is the host's site" "$(jget .data.region)" tas-1
eq "networks is an empty list" "$(jget '.data.networks | length')" 0
match "created_at is UTC ISO 8601" "$(jget .data.created_at)" "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
match "status starts provisioning or running" "$(jget .data.status)" "^(provisioning|running)$"
check "VPS becomes running" wait_status "$A" "$ID" running

KEY=$A api GET /v1/vps
eq "GET /v1/vps -> 200" "$CODE" 200
eq "list holds the VPS" "$(jget '.data | map(.id) | join(",")')" "$ID"

# --- actions
for step in shutdown:stopped start:running reboot:running rebuild:running; do
        act=${step%:*} want=${step#*:}
        KEY=$A api POST "/v1/vps/$ID/actions" "{\"action\":\"$act\"}"
        eq "action $act -> 202" "$CODE" 202
        check "after $act the VPS is $want" wait_status "$A" "$ID" "$want"
done
check "agent saw one domain" wait_for 10 "1 domain" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '.[0].observed.domains')\" == 1 ]"

# --- bad input: the spec's error shape, exact codes
err_is() { # DESC STATUS CODE [FIELD]
        eq "$1: HTTP $2" "$CODE" "$2"
        eq "$1: error.code $3" "$(jget .error.code)" "$3"
        [ -n "${4:-}" ] && eq "$1: names field $4" "$(jget .error.details.field)" "$4"
        return 0
}
KEY=$A api POST /v1/vps '{"name":"x",'
err_is "malformed JSON" 422 validation_error body
KEY=$A api POST /v1/vps '[1,2]'
err_is "JSON array body" 422 validation_error body
KEY=$A api POST /v1/vps '{"name":42,"size":"standard-2vcpu-4gb","image":"ubuntu-24.04"}'
err_is "name of the wrong type" 422 validation_error name
KEY=$A api POST /v1/vps '{"name":"bad name!","size":"standard-2vcpu-4gb","image":"ubuntu-24.04"}'
err_is "invalid name" 422 validation_error name
KEY=$A api POST /v1/vps '{"name":"x","image":"ubuntu-24.04"}'
err_is "missing size" 422 validation_error size
KEY=$A api POST /v1/vps '{"name":"x","size":"huge","image":"ubuntu-24.04"}'
err_is "unknown size" 422 validation_error size
check "unknown size lists allowed sizes" jq -e '.error.details.allowed | index("standard-2vcpu-4gb")' <<<"$BODY"
eq "unknown size message as the spec" "$(jget .error.message)" "Invalid VPS size specified"
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"windows-95"}'
err_is "unknown image" 422 validation_error image
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","region":"mars-1"}'
err_is "unknown region" 422 validation_error region
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","network":"net_nothere"}'
err_is "unknown network" 422 validation_error network
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","storage_type":"tape"}'
err_is "unknown storage type" 422 validation_error storage_type
eq "unknown storage type lists the types" "$(jq -c .error.details.allowed <<<"$BODY")" '["ssd","hdd"]'
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","anti_affinity_group":"Bad Group"}'
err_is "invalid anti-affinity group" 422 validation_error anti_affinity_group
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","anti_affinity_group":7}'
err_is "anti-affinity group of the wrong type" 422 validation_error anti_affinity_group
KEY=$A api POST "/v1/vps/$ID/actions" '{"action":"explode"}'
err_is "unknown action" 422 validation_error action
check "unknown action lists allowed actions" jq -e '.error.details.allowed | index("reboot")' <<<"$BODY"
KEY=$A api POST "/v1/vps/$ID/actions" '{}'
err_is "missing action" 422 validation_error action
KEY= api GET /v1/vps
err_is "no API key" 401 unauthorized
KEY=tas_0000000000000000000000000000000000000000 api GET /v1/vps
err_is "wrong API key" 401 unauthorized
KEY="not a key" api GET /v1/vps
err_is "malformed API key" 401 unauthorized
KEY=$A api GET /v1/vps/vps_0000000000000
err_is "unknown VPS id" 404 not_found
KEY=$A api GET /v1/vps/12
err_is "malformed VPS id" 404 not_found
KEY=$A api GET /v1/nothing
err_is "unknown route" 404 not_found
KEY=$A api PUT /v1/vps '{}'
err_is "wrong method" 405 method_not_allowed
check "405 says what is allowed" bash -c "curl -si -X PUT -H 'Authorization: Bearer $A' $API/v1/vps | grep -qi '^Allow: GET, POST'"
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
KEY=$A api POST /v1/vps "{\"name\":\"$big\"}"
err_is "body over the cap" 413 payload_too_large
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $A" -H 'Content-Type: text/plain' -d '{}' "$API/v1/vps"); BODY=$(cat "$T/body")
err_is "wrong content type" 415 unsupported_media_type

# --- tenant isolation
KEY=$B api GET /v1/vps
eq "other account lists nothing" "$(jget '.data | length')" 0
KEY=$B api GET "/v1/vps/$ID"
err_is "other account cannot see the VPS" 404 not_found
KEY=$B api POST "/v1/vps/$ID/actions" '{"action":"shutdown"}'
err_is "other account cannot act on the VPS" 404 not_found
KEY=$B api DELETE "/v1/vps/$ID"
err_is "other account cannot delete the VPS" 404 not_found
eq "the VPS is still running" "$(vps_status "$A" "$ID")" running

# --- delete
KEY=$A api DELETE "/v1/vps/$ID"
eq "DELETE -> 204" "$CODE" 204
KEY=$A api GET "/v1/vps/$ID"
err_is "deleted VPS is gone" 404 not_found
check "agent removed the domain" wait_for 10 "0 domains" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq '.[0].observed.domains')\" == 0 ]"
KEY=$A api DELETE "/v1/vps/$ID"
err_is "second DELETE" 404 not_found

# --- liveness: a stopped agent makes its VPS unknown, never stopped
KEY=$A api POST /v1/vps '{"name":"web2","size":"standard-1vcpu-1gb","image":"debian-12"}'
ID2=$(jget .data.id)
check "second VPS runs" wait_status "$A" "$ID2" running
# Lists are answered from memory while nothing in them changed (listcache):
# a change shows at once, and so does a host's timeout.
list_status() { KEY=$A api GET /v1/vps; jget ".data[] | select(.id == \"$1\") | .status"; }
eq "the list shows it running" "$(list_status "$ID2")" running
eq "and again (from memory)" "$(list_status "$ID2")" running
KEY=$A api POST "/v1/vps/$ID2/actions" '{"action":"shutdown"}'
match "a shutdown shows in the next list at once" "$(list_status "$ID2")" "^(stopping|stopped)$"
check "stopped" wait_status "$A" "$ID2" stopped
KEY=$A api POST "/v1/vps/$ID2/actions" '{"action":"start"}'
check "running again" wait_status "$A" "$ID2" running
eq "the list shows it running again" "$(list_status "$ID2")" running
stop_pid "${AGENT_PIDS[hv1]}"
check "host goes unreachable" wait_for 20 "unreachable" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == unreachable ]"
eq "its VPS is unknown, not stopped" "$(vps_status "$A" "$ID2")" unknown
eq "the list says unknown too" "$(list_status "$ID2")" unknown
KEY=$A api POST /v1/vps '{"name":"web3","size":"standard-1vcpu-1gb","image":"debian-12"}'
err_is "no live host: clear 422" 422 validation_error size
start_agent hv1
check "host back: VPS running again" wait_status "$A" "$ID2" running 20

# --- the image catalog (admin API, tasmanctl) and its use by POST /v1/vps
adm() { # METHOD PATH [BODY]
        CODE=$(curl -s -o "$T/adm.json" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
                ${3:+-d "$3"} "$ADMIN$2")
        BODY=$(cat "$T/adm.json" 2>/dev/null)
}
GOOD=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
adm POST /v1/images "{\"slug\":\"alpine-3.20\",\"name\":\"Alpine 3.20\",\"url\":\"https://example.org/alpine.qcow2\",\"sha256\":\"${GOOD^^}\",\"min_disk_gb\":30}"
eq "image add -> 201" "$CODE" 201
eq "its checksum is kept in lowercase" "$(jget .data.sha256)" "$GOOD"
eq "format defaults to qcow2" "$(jget .data.format)" qcow2
adm POST /v1/images "{\"slug\":\"alpine-3.20\",\"name\":\"again\",\"url\":\"https://example.org/a\",\"sha256\":\"$GOOD\"}"
eq "the same slug again -> 409 conflict" "$CODE/$(jget .error.code)" 409/conflict
for bad in '"slug":"-x"' '"slug":"Upper"' '"url":"ftp://example.org/x"' '"url":"https://a b"' '"sha256":"abc"' \
           '"sha256":"zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"' '"format":"vmdk"' \
           '"min_disk_gb":-1' '"name":""'; do
        body=$(jq -c -n --arg sha "$GOOD" "{slug: \"ok\", name: \"n\", url: \"https://example.org/x\", sha256: \$sha} + {$bad}")
        adm POST /v1/images "$body"
        eq "image add with $bad -> 422 on its field" "$CODE/$(jget .error.details.field)" "422/$(sed 's/^"\([a-z_0-9]*\)".*/\1/' <<<"$bad")"
done
eq "tasmanctl image list shows it" "$(ctl --json image list | jq -r '.[] | select(.slug == "alpine-3.20") | .min_disk_gb')" 30
check "tasmanctl image add refuses a bad checksum before asking" bash -c "! $BUILD/tasmanctl --broker $ADMIN image add x --name X --url https://e.org/x --sha256 12 2>/dev/null"
KEY=$A api POST /v1/vps '{"name":"small","size":"standard-1vcpu-1gb","image":"alpine-3.20"}'
err_is "an image needing more disk than the size has -> 422" 422 validation_error image
match "it says how much" "$(jget .error.message)" "at least 30 GB"
adm DELETE /v1/images/alpine-3.20
eq "image remove -> 204" "$CODE" 204
adm DELETE /v1/images/alpine-3.20
eq "removing it again -> 404" "$CODE" 404
KEY=$A api POST /v1/vps '{"name":"gone","size":"standard-2vcpu-4gb","image":"alpine-3.20"}'
err_is "a removed image takes no new VPS -> 422" 422 validation_error image
eq "the 422 lists the catalog" "$(jget '.error.details.allowed | sort | join(",")')" "debian-12,ubuntu-24.04"
# --- snapshots through the API. The agent (test driver) makes them at once;
# to see one in flight (creating, restoring), the agent is stopped first.
sql() { broker_sql "$1"; }
KEY=$A api POST /v1/vps '{"name":"snapvm","size":"standard-1vcpu-1gb","image":"debian-12"}'
SV=$(jget .data.id)
check "the snapshots' VPS runs" wait_status "$A" "$SV" running
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "GET snapshots -> 200, none at first" "$CODE/$(jget '.data | length')" 200/0
KEY=$A api POST "/v1/vps/$SV/snapshots" '{}'
err_is "snapshot without a name" 422 validation_error name
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"bad name"}'
err_is "snapshot with an invalid name" 422 validation_error name
KEY=$A api POST "/v1/vps/$SV/snapshots" "{\"name\":\"$(printf 'a%.0s' $(seq 64))\"}"
err_is "snapshot name of 64 characters" 422 validation_error name
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"ok","online":"yes"}'
err_is "snapshot online not a boolean" 422 validation_error online
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"ok","overwrite":1}'
err_is "snapshot overwrite not a boolean" 422 validation_error overwrite
KEY=$A api POST "/v1/vps/$SV/snapshots" '["ok"]'
err_is "snapshot body not an object" 422 validation_error body
KEY=$A api POST /v1/vps/vps_0000000000000/snapshots '{"name":"x"}'
err_is "snapshot of an unknown VPS" 404 not_found
KEY=$B api POST "/v1/vps/$SV/snapshots" '{"name":"x"}'
err_is "snapshot of another account's VPS" 404 not_found
KEY=$B api GET "/v1/vps/$SV/snapshots"
err_is "snapshots of another account's VPS" 404 not_found
KEY=$A api PUT "/v1/vps/$SV/snapshots" '{}'
err_is "PUT on a VPS's snapshots" 405 method_not_allowed
eq "that 405 allows GET, POST" "$(hdr Allow)" "GET, POST"
KEY=$A api POST "/v1/vps/$SV/snapshots/snap_0000000000000" '{}'
err_is "POST on one snapshot" 405 method_not_allowed
eq "that 405 allows GET, PATCH, DELETE" "$(hdr Allow)" "GET, PATCH, DELETE"
KEY=$A api GET "/v1/vps/$SV/snapshots/snap_0000000000000/restore"
err_is "GET on a restore" 405 method_not_allowed
KEY=$A api POST "/v1/vps/$SV/snapshots/snap_0000000000000/explode"
err_is "an unknown snapshot sub-resource" 404 not_found

stop_pid "${AGENT_PIDS[hv1]}" # no host to make it: it stays creating
H=("Idempotency-Key: snap-e2e-1")
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"before-upgrade"}'
H=()
eq "POST snapshots -> 202" "$CODE" 202
S1=$(jget .data.id)
FIRST=$BODY
match "snapshot id is snap_ + 13 chars" "$S1" "^snap_[0-9a-z]{13}$"
eq "a new snapshot is creating" "$(jget .data.status)" creating
eq "offline unless asked" "$(jget .data.online)" false
eq "it names its VPS" "$(jget .data.vps_id)" "$SV"
eq "it keeps the VPS's size and image" "$(jget '[.data.size_gb, .data.memory_mb, .data.vcpus, .data.image] | join(",")')" "25,1024,1,debian-12"
match "its created_at is UTC ISO 8601" "$(jget .data.created_at)" "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
eq "ready_at is null until ready" "$(jget .data.ready_at)" null
eq "Location names the snapshot" "$(hdr Location)" "/v1/vps/$SV/snapshots/$S1"
H=("Idempotency-Key: snap-e2e-1")
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"before-upgrade"}'
H=()
eq "the same Idempotency-Key again: a replay" "$CODE/$(hdr Idempotent-Replayed)" 202/true
eq "the replay answers the same body" "$BODY" "$FIRST"
eq "the replay answers the same Location" "$(hdr Location)" "/v1/vps/$SV/snapshots/$S1"
KEY=$A api GET "/v1/vps/$SV/snapshots/$S1"
eq "GET a creating snapshot -> 200 creating" "$CODE/$(jget .data.status)/$(jget .data.id)" "200/creating/$S1"
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "the list leaves out a creating snapshot" "$CODE/$(jget '.data | length')" 200/0
eq "the VPS is snapshotting (offline)" "$(vps_status "$A" "$SV")" snapshotting
KEY=$A api GET "/v1/vps?status=snapshotting"
eq "?status=snapshotting finds it" "$CODE/$(jget '[.data[].id] | join(",")')" "200/$SV"
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"second","online":true}'
err_is "a second snapshot while one is made" 409 conflict
match "the one-at-a-time 409 says why" "$(jget .error.message)" "cannot take a snapshot now: a snapshot of it is being made"
KEY=$A api POST "/v1/vps/$SV/snapshots/$S1/restore"
err_is "restoring a creating snapshot" 409 conflict
match "that 409 says the snapshot is not ready" "$(jget .error.message)" "is creating: only a ready one"
KEY=$A api PATCH "/v1/vps/$SV/snapshots/$S1" '{"name":"renamed"}'
eq "PATCH renames -> 200" "$CODE/$(jget .data.name)/$(jget .data.status)" 200/renamed/creating
KEY=$A api PATCH "/v1/vps/$SV/snapshots/$S1" '{"name":"-bad"}'
err_is "rename to an invalid name" 422 validation_error name
KEY=$A api PATCH "/v1/vps/$SV/snapshots/$S1" '{}'
err_is "rename without a name" 422 validation_error name
KEY=$B api GET "/v1/vps/$SV/snapshots/$S1"
err_is "another account cannot see the snapshot" 404 not_found
KEY=$B api DELETE "/v1/vps/$SV/snapshots/$S1"
err_is "another account cannot delete the snapshot" 404 not_found
KEY=$A api GET "/v1/vps/$ID2/snapshots/$S1"
err_is "the snapshot under another VPS" 404 not_found
KEY=$A api GET "/v1/vps/$SV/snapshots/snap_0000000000000"
err_is "unknown snapshot id" 404 not_found
KEY=$A api GET "/v1/vps/$SV/snapshots/12"
err_is "malformed snapshot id" 404 not_found
RO=$(ctl key create acme --read-only 2>/dev/null | head -1)
KEY=$RO api GET "/v1/vps/$SV/snapshots/$S1"
eq "read-only key reads a snapshot" "$CODE" 200
KEY=$RO api PATCH "/v1/vps/$SV/snapshots/$S1" '{"name":"ro"}'
err_is "read-only key cannot rename" 403 forbidden
KEY=$RO api DELETE "/v1/vps/$SV/snapshots/$S1"
err_is "read-only key cannot delete" 403 forbidden
KEY=$A api DELETE "/v1/vps/$SV/snapshots/$S1"
eq "DELETE a creating snapshot -> 202 deleting" "$CODE/$(jget .data.status)" 202/deleting
eq "the VPS is running again" "$(vps_status "$A" "$SV")" running
start_agent hv1
check "a deleted snapshot is gone once its host reports none" wait_snap "$A" "$SV" "$S1" gone 20

# Ten ready snapshots, made by the agent (online ones: odd numbers).
for n in $(seq 1 10); do
        KEY=$A api POST "/v1/vps/$SV/snapshots" "{\"name\":\"r$n\",\"online\":$([ $((n % 2)) = 1 ] && echo true || echo false)}"
        [ "$CODE" == 202 ] || not_ok "snapshot r$n -> $CODE"
        wait_snap "$A" "$SV" "$(jget .data.id)" ready 20 >/dev/null || not_ok "snapshot r$n never ready"
done
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "ready snapshots are listed, in id order" "$(jget '[.data[].name] | join(",")')" "r1,r2,r3,r4,r5,r6,r7,r8,r9,r10"
match "a ready one has its ready_at" "$(jget '.data[0].status + " " + .data[0].ready_at')" "^ready [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$"
eq "and its online flag" "$(jget '[.data[0].online, .data[1].online] | map(tostring) | join(",")')" "true,false"
eq "the VPS runs after them all (offline ones stopped and started it)" "$(vps_status "$A" "$SV")" running
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"eleventh"}'
err_is "an eleventh snapshot" 422 validation_error
match "it says the limit" "$(jget .error.message)" "at most 10 snapshots per VPS"
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"r3"}'
err_is "a snapshot name taken" 409 conflict name
KEY=$A api PATCH "/v1/vps/$SV/snapshots/$(KEY=$A api GET "/v1/vps/$SV/snapshots"; jget '.data[0].id')" '{"name":"r2"}'
err_is "renaming to a name taken" 409 conflict name
KEY=$A api GET "/v1/vps/$SV/snapshots"
OLD3=$(jget '.data[] | select(.name == "r3") | .id')
# An overwrite dropped before it is ready keeps the old copy.
stop_pid "${AGENT_PIDS[hv1]}"
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"r3","overwrite":true,"online":true}'
eq "overwrite at the limit -> 202 creating" "$CODE/$(jget .data.status)/$(jget .data.online)" 202/creating/true
S2=$(jget .data.id)
eq "an online snapshot leaves the VPS running" "$(vps_status "$A" "$SV")" running
KEY=$A api DELETE "/v1/vps/$SV/snapshots/$S2"
eq "its DELETE -> 202" "$CODE" 202
start_agent hv1
check "it is gone" wait_snap "$A" "$SV" "$S2" gone 20
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "the overwritten one is still there" "$(jget '.data | length')/$(jget '.data[] | select(.name == "r3") | .id')" "10/$OLD3"
# An overwrite that is made replaces the old copy once it exists.
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"r3","overwrite":true,"online":true}'
S3=$(jget .data.id)
check "the overwrite is made" wait_snap "$A" "$SV" "$S3" ready 20
check "then the old copy goes" wait_snap "$A" "$SV" "$OLD3" gone 20
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "still ten, r3 the new one" "$(jget '.data | length')/$(jget '.data[] | select(.name == "r3") | .id')" "10/$S3"
R1=$(jget '.data[0].id') R2=$(jget '.data[1].id')
stop_pid "${AGENT_PIDS[hv1]}" # the restore stays in flight
KEY=$A api POST "/v1/vps/$SV/snapshots/$R1/restore"
eq "restore -> 202 with the VPS restoring" "$CODE/$(jget .data.id)/$(jget .data.status)" "202/$SV/restoring"
eq "the VPS says restoring" "$(vps_status "$A" "$SV")" restoring
KEY=$A api POST "/v1/vps/$SV/snapshots/$R2/restore"
err_is "a second restore while one is in flight" 409 conflict
KEY=$A api DELETE "/v1/vps/$SV/snapshots/$R1"
err_is "deleting the snapshot being restored" 409 conflict
KEY=$A api POST "/v1/vps/$SV/snapshots" '{"name":"during"}'
err_is "a snapshot while a restore is in flight" 409 conflict
match "the restore-in-flight 409 says why" "$(jget .error.message)" "a snapshot is being restored to it"
KEY=$A api DELETE "/v1/vps/$SV/snapshots/$R2"
eq "another snapshot may go meanwhile" "$CODE/$(jget .data.status)" 202/deleting
KEY=$A api DELETE "/v1/vps/$SV/snapshots/$R2"
eq "deleting it again: still deleting" "$CODE/$(jget .data.status)" 202/deleting
start_agent hv1
check "the restore is carried out: running again" wait_status "$A" "$SV" running 20
check "the deleted one goes" wait_snap "$A" "$SV" "$R2" gone 20
KEY=$A api GET "/v1/vps/$SV/snapshots"
eq "nine left" "$(jget '.data | length')" 9

# A VPS from a snapshot: on its host, of its image; bad references refused.
KEY=$A api POST /v1/vps "{\"name\":\"fromsnap\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":\"$R1\"}"
eq "a VPS from a snapshot -> 201" "$CODE/$(jget .data.image)" "201/debian-12"
FS=$(jget .data.id)
check "it runs" wait_status "$A" "$FS" running 20
KEY=$A api POST /v1/vps '{"name":"x1","size":"standard-1vcpu-1gb","snapshot":"snap_0000000000000"}'
err_is "a VPS from an unknown snapshot" 422 validation_error snapshot
KEY=$B api POST /v1/vps "{\"name\":\"x2\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":\"$R1\"}"
err_is "a VPS from another account's snapshot" 422 validation_error snapshot
KEY=$A api POST /v1/vps "{\"name\":\"x3\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":\"$R1\",\"image\":\"ubuntu-24.04\"}"
err_is "a VPS from a snapshot, of another image" 422 validation_error image
KEY=$A api POST /v1/vps "{\"name\":\"x4\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":7}"
err_is "a snapshot id that is not a string" 422 validation_error snapshot
KEY=$A api DELETE "/v1/vps/$FS"
eq "deleting it -> 204" "$CODE" 204

KEY=$A api DELETE "/v1/vps/$SV"
eq "deleting the VPS -> 204" "$CODE" 204
KEY=$A api GET "/v1/vps/$SV/snapshots/$R1"
err_is "its snapshots went with it" 404 not_found
eq "no snapshot row is left of it" "$(sql "SELECT COUNT(*) FROM snapshots s JOIN vms v ON v.id = s.vm_id WHERE v.name = 'snapvm'")" 0
# --- private networks and public address pools. The agent (test driver)
# does nothing with them yet: what is checked is the API and what the
# broker records for the hosts.
adm POST /v1/ip_pools '{"site":"tas-1","ipv4":"203.0.113.0/28","gateway4":"203.0.113.1","ipv6":"2001:db8:5::/64","gateway6":"2001:db8:5::1"}'
eq "ip_pools add -> 201" "$CODE/$(jget .data.site)/$(jget .data.used)" 201/tas-1/0
adm POST /v1/ip_pools '{"site":"tas-1","ipv4":"198.51.100.0/24","gateway4":"198.51.100.1"}'
eq "a second pool for the site -> 409" "$CODE/$(jget .error.code)" 409/conflict
for bad in 'site:"nosuch"' 'site:"Bad"' 'ipv4:"203.0.114.1/24"' 'ipv4:"2001:db8::/64"' 'ipv4:"10.0.0.0/31"' \
           'gateway4:"203.0.115.1"' 'gateway4:"203.0.114.0"' 'gateway4:"203.0.114.255"' 'gateway4:7' \
           'ipv6:"2001:db8:6::1/64"' 'ipv6:"203.0.114.0/24"' 'gateway6:"2001:db8:7::1"'; do
        body=$(jq -c -n "{site: \"tas-1\", ipv4: \"203.0.114.0/24\", gateway4: \"203.0.114.1\", ipv6: \"2001:db8:6::/64\", gateway6: \"2001:db8:6::1\"} + {$bad}")
        adm POST /v1/ip_pools "$body"
        eq "ip_pools add with $bad -> 422 on its field" "$CODE/$(jget .error.details.field)" "422/${bad%%:*}"
done
adm POST /v1/ip_pools '{"site":"tas-1","ipv4":"203.0.114.0/24","gateway4":"203.0.114.1","ipv6":"2001:db8:6::/64"}'
eq "ipv6 without gateway6 -> 422 on gateway6" "$CODE/$(jget .error.details.field)" 422/gateway6
adm PUT /v1/ip_pools '{}'
eq "PUT on ip_pools -> 405" "$CODE" 405
eq "tasmanctl pool list shows it" "$(ctl --json pool list | jq -r '.[] | select(.site == "tas-1") | .ipv4 + " " + .gateway4 + " " + .ipv6')" "203.0.113.0/28 203.0.113.1 2001:db8:5::/64"
check "tasmanctl pool list prints a table" bash -c "$BUILD/tasmanctl --broker $ADMIN pool list | grep -q '^SITE.*GATEWAY6'"
ctl pool add tas-1 --ipv4 10.0.0.0/24 >/dev/null 2>&1; eq "tasmanctl pool add without --gateway4: usage error" "$?" 2
ctl pool add tas-1 --ipv4 10.0.0.0/24 --gateway4 10.0.0.1 --ipv6 2001:db8::/64 >/dev/null 2>&1; eq "tasmanctl pool add --ipv6 without --gateway6: usage error" "$?" 2
ctl pool add tas-1 --ipv4 198.51.100.0/24 --gateway4 198.51.100.1 >/dev/null 2>&1; eq "tasmanctl pool add for a site with one: exit 1" "$?" 1
ctl image list --ipv4 10.0.0.0/24 >/dev/null 2>&1; eq "--ipv4 outside pool add: usage error" "$?" 2

KEY=$A api GET /v1/networks
eq "GET /v1/networks -> 200, none at first" "$CODE/$(jget '.data | length')" 200/0
KEY=$A api POST /v1/networks '{"name":"backend","cidr":"10.20.0.0/24"}'
eq "POST /v1/networks -> 201" "$CODE" 201
NET=$(jget .data.id)
match "a network id is net_ + 13 chars" "$NET" "^net_[0-9a-z]{13}$"
eq "the new network's name, cidr and VPS" "$(jget '[.data.name, .data.cidr, (.data.vps_ids | length | tostring)] | join(",")')" "backend,10.20.0.0/24,0"
match "the new network's created_at is UTC ISO 8601" "$(jget .data.created_at)" "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
eq "Location names the network" "$(hdr Location)" "/v1/networks/$NET"
KEY=$A api GET "/v1/networks/$NET"
eq "GET one network -> 200" "$CODE/$(jget .data.id)/$(jget .data.cidr)" "200/$NET/10.20.0.0/24"
KEY=$A api GET /v1/networks
eq "the network list holds it" "$CODE/$(jget '[.data[].id] | join(",")')" "200/$NET"
for bad in '{"name":"x"}|cidr|cidr is required' '{"name":"x","cidr":7}|cidr|cidr must be a string' \
           '{"name":"x","cidr":"10.20.0.1/24"}|cidr|host bits set (the network is 10.20.0.0/24)' \
           '{"name":"x","cidr":"8.8.8.0/24"}|cidr|private range' '{"name":"x","cidr":"10.0.0.0/8"}|cidr|/16 to /29' \
           '{"name":"x","cidr":"10.0.0.0/30"}|cidr|/16 to /29' '{"name":"x","cidr":"10.20.0.128/25"}|cidr|overlaps network '"$NET"' (10.20.0.0/24)' \
           '{"name":"x","cidr":"fd00::/64"}|cidr|a.b.c.d/n' '{"name":"x","cidr":"10.1.1/24"}|cidr|a.b.c.d/n' \
           '{"cidr":"10.30.0.0/24"}|name|name is required' '{"name":"bad name","cidr":"10.30.0.0/24"}|name|name must be' \
           '["x"]|body|JSON object'; do
        IFS='|' read -r body field msg <<<"$bad"
        KEY=$A api POST /v1/networks "$body"
        eq "network $body -> 422 on $field" "$CODE/$(jget .error.code)/$(jget .error.details.field)" "422/validation_error/$field"
        match "network $body: the message says why" "$(jget .error.message)" "$(sed 's/[][().*/]/\\&/g' <<<"$msg")"
done
KEY=$RO api POST /v1/networks '{"name":"ro","cidr":"10.40.0.0/24"}'
err_is "read-only key cannot make a network" 403 forbidden
KEY=$B api POST /v1/networks '{"name":"theirs","cidr":"10.20.0.0/24"}'
eq "another account may use the same cidr" "$CODE" 201
NETB=$(jget .data.id)
KEY=$B api GET "/v1/networks/$NET"
err_is "another account cannot see the network" 404 not_found
KEY=$B api DELETE "/v1/networks/$NET"
err_is "another account cannot delete the network" 404 not_found
KEY=$B api GET /v1/networks
eq "each account lists its own networks" "$(jget '[.data[].id] | join(",")')" "$NETB"
KEY=$A api GET /v1/networks/net_0000000000000
err_is "unknown network id" 404 not_found
KEY=$A api GET /v1/networks/12
err_is "malformed network id" 404 not_found
KEY=$A api PUT /v1/networks '{}'
err_is "PUT on networks" 405 method_not_allowed
eq "the networks 405 allows GET, POST" "$(hdr Allow)" "GET, POST"
KEY=$A api POST "/v1/networks/$NET" '{}'
err_is "POST on one network" 405 method_not_allowed
eq "the one-network 405 allows GET, DELETE" "$(hdr Allow)" "GET, DELETE"
KEY=$A api GET "/v1/networks/$NET/attach"
err_is "GET on attach" 405 method_not_allowed
eq "the attach 405 allows POST" "$(hdr Allow)" POST
KEY=$A api POST "/v1/networks/$NET/vpn-config" '{}'
err_is "POST on vpn-config" 405 method_not_allowed
KEY=$A api GET "/v1/networks/$NET/explode"
err_is "an unknown network sub-resource" 404 not_found

# attach, and the VPS's networks
KEY=$A api POST /v1/vps '{"name":"netvm","size":"standard-1vcpu-1gb","image":"debian-12"}'
NV=$(jget .data.id)
eq "a VPS made with no network lists none" "$(jget '.data.networks | length')" 0
nic_rows() { sql "SELECT COALESCE(n.ipv4, '-') || ' ' || COALESCE(n.ipv6, '-') FROM nics n JOIN vms v ON v.id = n.vm_id WHERE v.name = '$1' AND v.deleted_at IS NULL ORDER BY n.position" | paste -sd';'; }
eq "it has a public NIC from the pool (first free address, IPv4 and IPv6)" "$(nic_rows netvm)" "203.0.113.2 2001:db8:5::2"
KEY=$A api POST "/v1/networks/$NET/attach" "{\"vps_id\":\"$NV\"}"
eq "attach -> 202 with the VPS" "$CODE/$(jget .data.id)" "202/$NV"
eq "the attached VPS lists the network" "$(jget '.data.networks | join(",")')" "$NET"
eq "it got the network's first address past .1" "$(nic_rows netvm)" "203.0.113.2 2001:db8:5::2;10.20.0.2 -"
KEY=$A api GET "/v1/vps/$NV"
eq "GET the VPS: its networks" "$(jget '.data.networks | join(",")')" "$NET"
ONE_RAW=$BODY
KEY=$A api GET "/v1/vps?name=netvm"
ITEM=${BODY#'{"data":['}; ITEM=${ITEM%'],"next_cursor":null}'}
eq "a list item with networks is byte for byte the single VPS" "$ITEM" "${ONE_RAW:8:${#ONE_RAW}-9}"
KEY=$A api GET "/v1/networks/$NET"
eq "the network lists the VPS" "$(jget '.data.vps_ids | join(",")')" "$NV"
KEY=$A api POST "/v1/networks/$NET/attach" "{\"vps_id\":\"$NV\"}"
err_is "attaching it twice" 409 conflict vps_id
KEY=$A api POST "/v1/networks/$NET/attach" '{}'
err_is "attach without vps_id" 422 validation_error vps_id
KEY=$A api POST "/v1/networks/$NET/attach" '{"vps_id":7}'
err_is "attach with a vps_id not a string" 422 validation_error vps_id
KEY=$A api POST "/v1/networks/$NET/attach" 'nonsense'
err_is "attach with a malformed body" 422 validation_error body
KEY=$A api POST "/v1/networks/$NET/attach" '{"vps_id":"vps_0000000000000"}'
err_is "attach an unknown VPS" 404 not_found
KEY=$B api POST /v1/vps '{"name":"bvm","size":"standard-1vcpu-1gb","image":"debian-12"}'
BV=$(jget .data.id)
KEY=$A api POST "/v1/networks/$NET/attach" "{\"vps_id\":\"$BV\"}"
err_is "attach another account's VPS" 404 not_found
KEY=$A api POST "/v1/networks/$NETB/attach" "{\"vps_id\":\"$NV\"}"
err_is "attach to another account's network" 404 not_found
KEY=$B api POST "/v1/networks/$NETB/attach" "{\"vps_id\":\"$NV\"}"
err_is "another account attaches our VPS" 404 not_found
KEY=$A api POST /v1/networks/net_0000000000000/attach "{\"vps_id\":\"$NV\"}"
err_is "attach to an unknown network" 404 not_found
KEY=$RO api POST "/v1/networks/$NET/attach" "{\"vps_id\":\"$NV\"}"
err_is "read-only key cannot attach" 403 forbidden
for i in 2 3 4; do
        KEY=$A api POST /v1/networks "{\"name\":\"n$i\",\"cidr\":\"10.2$i.0.0/24\"}"
        eval "N$i=\$(jget .data.id)"
done
H=("Idempotency-Key: attach-n2")
KEY=$A api POST "/v1/networks/$N2/attach" "{\"vps_id\":\"$NV\"}"
FIRST=$BODY
KEY=$A api POST "/v1/networks/$N2/attach" "{\"vps_id\":\"$NV\"}"
H=()
eq "an attach retried with its Idempotency-Key: a replay, not a 409" "$CODE/$(hdr Idempotent-Replayed)" 202/true
eq "the attach replay answers the same body" "$BODY" "$FIRST"
KEY=$A api POST "/v1/networks/$N3/attach" "{\"vps_id\":\"$NV\"}"
eq "a third network -> 202" "$CODE/$(jget '.data.networks | join(",")')" "202/$NET,$N2,$N3"
KEY=$A api POST "/v1/networks/$N4/attach" "{\"vps_id\":\"$NV\"}"
err_is "a fifth NIC (public + three private)" 422 validation_error vps_id
match "the NIC limit says why" "$(jget .error.message)" "has 4 network interfaces"

# network at creation
KEY=$A api POST /v1/vps "{\"name\":\"netvm2\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$NET\"}"
eq "a VPS made on a network -> 201, listing it" "$CODE/$(jget '.data.networks | join(",")')" "201/$NET"
NV2=$(jget .data.id)
eq "its NICs: public (.3 went to another account's VPS), then the network's next address" "$(nic_rows netvm2)" "203.0.113.4 2001:db8:5::4;10.20.0.3 -"
KEY=$A api POST /v1/vps "{\"name\":\"x\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$NETB\"}"
err_is "a VPS on another account's network" 422 validation_error network
KEY=$A api POST /v1/vps '{"name":"x","size":"standard-1vcpu-1gb","image":"debian-12","network":7}'
err_is "a network that is not a string" 422 validation_error network
eq "the refused ones were not made" "$(sql "SELECT COUNT(*) FROM vms WHERE name = 'x'")" 0

# a full network: 5 addresses in a /29 (.0, .1 and .7 never handed out)
KEY=$A api POST /v1/networks '{"name":"tiny","cidr":"192.168.7.0/29"}'
TINY=$(jget .data.id)
for i in 1 2 3 4 5; do
        KEY=$A api POST /v1/vps "{\"name\":\"tiny$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$TINY\"}"
        [ "$CODE" == 201 ] || not_ok "tiny$i -> $CODE"
done
eq "the fifth got the last address" "$(nic_rows tiny5)" "203.0.113.9 2001:db8:5::9;192.168.7.6 -"
KEY=$A api POST /v1/vps "{\"name\":\"tiny6\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$TINY\"}"
err_is "a VPS on a full network" 422 validation_error network
eq "that 422 says addresses" "$(jget .error.details.reason)" addresses
KEY=$A api POST "/v1/networks/$TINY/attach" "{\"vps_id\":\"$NV2\"}"
err_is "attach to a full network" 409 conflict
match "that 409 says why" "$(jget .error.message)" "has no free address left"

# the public pool used up: no VPS, a clear 422
for i in $(seq 1 10); do
        KEY=$A api POST /v1/vps "{\"name\":\"fill$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}"
        [ "$CODE" == 201 ] || break
done
err_is "a VPS when the site's pool is used up" 422 validation_error size
match "it names the pool" "$(jget .error.message)" "public IPv4 pool of site tas-1 \(203.0.113.0/28\) is used up"
eq "and was not made" "$(sql "SELECT COUNT(*) FROM vms WHERE name = 'fill$i'")" 0
eq "tasmanctl pool list counts the addresses used" "$(ctl --json pool list | jq '.[] | select(.site == "tas-1") | .used')" 13
ctl pool remove tas-1 >/dev/null 2>&1; eq "tasmanctl pool remove while used: exit 1" "$?" 1
adm DELETE /v1/ip_pools/tas-1
eq "DELETE ip_pools while used -> 409" "$CODE/$(jget .error.code)" 409/conflict

# vpn-config: no Netbird here, said clearly
KEY=$A api GET "/v1/networks/$NET/vpn-config"
err_is "vpn-config without a VPN integration" 501 not_implemented
match "vpn-config says so" "$(jget .error.message)" "not configured"
KEY=$B api GET "/v1/networks/$NET/vpn-config"
err_is "vpn-config of another account's network" 404 not_found

# delete: not while VPS are attached; their delete frees the addresses
KEY=$A api DELETE "/v1/networks/$NET"
err_is "deleting a network with VPS attached" 409 conflict
match "that 409 names the VPS" "$(jget .error.message)" "has 2 VPS attached \($NV, \.\.\.\): delete them first"
for v in $(sql "SELECT name FROM vms WHERE deleted_at IS NULL AND (name LIKE 'netvm%' OR name LIKE 'tiny%' OR name LIKE 'fill%')"); do
        id=$(KEY=$A api GET "/v1/vps?name=$v"; jget '.data[0].id')
        KEY=$A api DELETE "/v1/vps/$id"
        [ "$CODE" == 204 ] || not_ok "delete $v -> $CODE"
done
KEY=$A api GET "/v1/networks/$NET"
eq "a deleted VPS leaves the network" "$(jget '.data.vps_ids | length')" 0
eq "and its NICs are gone at once" "$(sql "SELECT COUNT(*) FROM nics n JOIN vms v ON v.id = n.vm_id WHERE v.name LIKE 'netvm%'")" 0
KEY=$A api DELETE "/v1/networks/$NET"
eq "DELETE the network -> 204" "$CODE" 204
KEY=$A api GET "/v1/networks/$NET"
err_is "a deleted network is gone" 404 not_found
KEY=$A api DELETE "/v1/networks/$NET"
err_is "deleting it again" 404 not_found
H=("Idempotency-Key: net-e2e-1")
KEY=$A api POST /v1/networks '{"name":"again","cidr":"10.20.0.0/24"}'
FIRST=$BODY
KEY=$A api POST /v1/networks '{"name":"again","cidr":"10.20.0.0/24"}'
H=()
eq "its cidr is free again; a POST retried with its Idempotency-Key is a replay" "$CODE/$(hdr Idempotent-Replayed)" 201/true
eq "the network replay answers the same body" "$BODY" "$FIRST"
eq "events recorded" "$(sql "SELECT COUNT(*) FROM events WHERE kind = 'network.deleted'")/$(sql "SELECT CASE WHEN COUNT(*) > 8 THEN 1 ELSE 0 END FROM events WHERE kind = 'vps.attached'")" "1/1"
KEY=$B api DELETE "/v1/vps/$BV"
ctl pool remove tas-1 >/dev/null 2>&1; eq "tasmanctl pool remove once unused: exit 0" "$?" 0
eq "the pool is gone" "$(ctl --json pool list | jq length)" 0
adm DELETE /v1/ip_pools/tas-1
eq "DELETE it again -> 404" "$CODE" 404
exit 0
