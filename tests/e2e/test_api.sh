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
stop_pid "${AGENT_PIDS[hv1]}"
check "host goes unreachable" wait_for 20 "unreachable" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == unreachable ]"
eq "its VPS is unknown, not stopped" "$(vps_status "$A" "$ID2")" unknown
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
exit 0
