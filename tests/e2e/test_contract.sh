# The native API as a contract (issue 5): API keys (read-only, listed by
# prefix, revoked), rate limits, SSH keys, pagination, idempotent POSTs and
# ETags. One broker and one agent on libvirt's test driver.
source "$(dirname "$0")/lib.sh"

start_broker || fatal "broker starts"
start_agent hv1
check "agent joins" wait_for 15 "node up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == up ]"
err_is() { # DESC STATUS CODE [FIELD]
        eq "$1: HTTP $2" "$CODE" "$2"
        eq "$1: error.code $3" "$(jget .error.code)" "$3"
        [ -n "${4:-}" ] && eq "$1: names field $4" "$(jget .error.details.field)" "$4"
        return 0
}

# --- API keys: read-only keys, listing by prefix, revocation
A=$(new_account keys enterprise) || fatal "account"
RO=$(ctl key create keys --read-only 2>/dev/null | head -1)
match "a read-only key is a key" "$RO" '^tas_[0-9a-f]{40}$'
KEY=$RO api GET /v1/vps
eq "read-only key: GET -> 200" "$CODE" 200
KEY=$RO api POST /v1/vps '{"name":"x","size":"standard-1vcpu-1gb","image":"debian-12"}'
err_is "read-only key: POST" 403 forbidden
KEY=$RO api DELETE /v1/vps/vps_0000000000000
err_is "read-only key: DELETE" 403 forbidden
KEY=$RO api PUT /v1/vps
err_is "read-only key, unknown method: 405 comes first" 405 method_not_allowed
ctl --json key list keys >"$T/keys.json"
eq "key list: two keys" "$(jq length "$T/keys.json")" 2
eq "key list: one read-only" "$(jq '[.[] | select(.read_only)] | length' "$T/keys.json")" 1
check "key list: prefixes only, never a key or a hash" bash -c "! grep -qE 'tas_[0-9a-f]{40}|hash' $T/keys.json"
eq "key list: the prefix is the key's start" "$(jq -r '.[1].prefix' "$T/keys.json")" "${RO:0:12}"
ctl key list keys >"$T/keys.txt"
check "key list: a table for people" grep -q "READ-ONLY" "$T/keys.txt"
RO_ID=$(jq -r '.[1].id' "$T/keys.json")
ctl key revoke keys "$RO_ID" >/dev/null 2>&1; eq "key revoke -> exit 0" "$?" 0
KEY=$RO api GET /v1/vps
err_is "revoked key" 401 unauthorized
KEY=$A api GET /v1/vps
eq "the other key still works" "$CODE" 200
check "key list: revoked_at set" bash -c "\"$BUILD/tasmanctl\" --broker $ADMIN --json key list keys | jq -e '.[1].revoked_at != null and .[0].revoked_at == null'"
ctl key revoke keys key_zzzzzzzzzzzzz >/dev/null 2>&1; eq "revoke an unknown key: exit 1" "$?" 1
ctl key revoke nosuch "$RO_ID" >/dev/null 2>&1; eq "revoke in an unknown account: exit 1" "$?" 1
new_account other >/dev/null || fatal "account other"
ctl key revoke other "$RO_ID" >/dev/null 2>&1; eq "revoke another account's key: exit 1" "$?" 1
ctl key create keys --tier pro >/dev/null 2>&1; eq "--tier on key create: usage error" "$?" 2

# --- pagination, filters, ETag
P=$(new_account pages enterprise) || fatal "account pages"
for i in $(seq 1 25); do
        KEY=$P api POST /v1/vps "{\"name\":\"p$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}"
        [ "$CODE" == 201 ] || not_ok "create p$i -> $CODE"
done
KEY=$P api GET /v1/vps
eq "no limit: the whole list, as the spec" "$(jget '.data | length')/$(jget .next_cursor)" "25/null"
KEY=$P api GET "/v1/vps?limit=10"
eq "limit=10: ten" "$(jget '.data | length')" 10
check "limit=10: a next cursor" [ "$(jget .next_cursor)" != null ]
# Page through while 10 more are created concurrently: nothing is seen
# twice, none of the first 25 is missed, ids come in order.
( for i in $(seq 26 35); do
        curl -s -o /dev/null -H "Authorization: Bearer $P" -H 'Content-Type: application/json' \
                -d "{\"name\":\"p$i\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}" "$API/v1/vps"
  done ) &
CREATOR=$!
cur=; : >"$T/paged"
for _ in $(seq 1 20); do
        KEY=$P api GET "/v1/vps?limit=4${cur:+&cursor=$cur}"
        [ "$CODE" == 200 ] || { not_ok "page -> $CODE"; break; }
        jq -r '.data[].name' <<<"$BODY" >>"$T/paged"
        cur=$(jget .next_cursor)
        [ "$cur" == null ] && break
done
wait "$CREATOR"
eq "paging under concurrent inserts: no duplicate" "$(sort "$T/paged" | uniq -d | wc -l)" 0
eq "paging under concurrent inserts: all of the first 25" "$(grep -cxE 'p([1-9]|1[0-9]|2[0-5])' "$T/paged")" 25
KEY=$P api GET "/v1/vps?limit=1000"
eq "limit=1000: everything, one page" "$(jget '.data | length')/$(jget .next_cursor)" "35/null"
KEY=$P api GET "/v1/vps?limit=0"
err_is "limit=0" 422 validation_error limit
KEY=$P api GET "/v1/vps?limit=1001"
err_is "limit=1001" 422 validation_error limit
KEY=$P api GET "/v1/vps?limit=ten"
err_is "limit=ten" 422 validation_error limit
KEY=$P api GET "/v1/vps?cursor=garbage"
err_is "a cursor we did not give" 422 validation_error cursor
KEY=$P api GET "/v1/vps?name=p7"
eq "filter by name" "$(jget '[.data[].name] | join(",")')" p7
KEY=$P api GET "/v1/vps?region=nowhere"
eq "filter by an empty region" "$(jget '.data | length')" 0
check "filter by status: wait until all run" wait_for 30 "35 running" bash -c "[ \"\$(curl -s -H 'Authorization: Bearer $P' '$API/v1/vps?status=running' | jq '.data | length')\" == 35 ]"
KEY=$P api GET "/v1/vps?status=stopped"
eq "filter by status: none stopped" "$(jget '.data | length')" 0
KEY=$P api GET "/v1/vps?status=running&limit=7"
eq "status filter with paging" "$(jget '.data | length')" 7
KEY=$P api GET "/v1/vps?status=sleeping"
err_is "unknown status" 422 validation_error status
check "unknown status lists the statuses" jq -e '.error.details.allowed | index("provisioning")' <<<"$BODY"
KEY=$A api GET "/v1/vps?name=p7"
eq "another account's names are not seen" "$(jget '.data | length')" 0

ID=$(KEY=$P api GET "/v1/vps?name=p3"; jget '.data[0].id')
KEY=$P api GET "/v1/vps?name=p3"; LIST_RAW=$BODY
KEY=$P api GET "/v1/vps/$ID"; ONE_RAW=$BODY
ITEM=${LIST_RAW#'{"data":['}; ITEM=${ITEM%'],"next_cursor":null}'}
eq "a list item is byte for byte the single resource" "$ITEM" "${ONE_RAW:8:${#ONE_RAW}-9}"
KEY=$P api GET "/v1/vps/$ID"
TAG=$(hdr ETag)
match "GET one VPS: an ETag" "$TAG" '^"[0-9a-f]{16}"$'
H=("If-None-Match: $TAG"); KEY=$P api GET "/v1/vps/$ID"; H=()
eq "If-None-Match with it -> 304" "$CODE" 304
eq "304 has no body" "$BODY" ""
H=("If-None-Match: \"0000000000000000\", W/$TAG"); KEY=$P api GET "/v1/vps/$ID"; H=()
eq "a weak match in a list -> 304" "$CODE" 304
KEY=$P api POST "/v1/vps/$ID/actions" '{"action":"shutdown"}'
H=("If-None-Match: $TAG"); KEY=$P api GET "/v1/vps/$ID"; H=()
eq "changed since -> 200 and a new tag" "$CODE/$([ "$(hdr ETag)" != "$TAG" ] && echo new)" "200/new"

# --- Idempotency-Key: a retry returns the first answer and does nothing twice
I=$(new_account idem enterprise) || fatal "account idem"
count() { KEY=$I api GET /v1/vps; jget '.data | length'; }
B='{"name":"once","size":"standard-1vcpu-1gb","image":"debian-12"}'
H=("Idempotency-Key: create-once-1"); KEY=$I api POST /v1/vps "$B"; H=()
eq "first POST with a key -> 201" "$CODE" 201
FIRST=$BODY; FIRST_ID=$(jget .data.id); FIRST_LOC=$(hdr Location)
H=("Idempotency-Key: create-once-1"); KEY=$I api POST /v1/vps "$B"; H=()
eq "retry -> 201 again" "$CODE" 201
eq "retry: the first answer, byte for byte" "$BODY" "$FIRST"
eq "retry: the same Location" "$(hdr Location)" "$FIRST_LOC"
eq "retry: says it is a replay" "$(hdr Idempotent-Replayed)" true
eq "retry: one VPS, not two" "$(count)" 1
H=("Idempotency-Key: create-once-1"); KEY=$I api POST /v1/vps '{"name":"other","size":"standard-1vcpu-1gb","image":"debian-12"}'; H=()
err_is "same key, another body" 422 validation_error Idempotency-Key
eq "nothing made by it" "$(count)" 1
H=("Idempotency-Key: $(printf 'k%.0s' $(seq 1 256))"); KEY=$I api POST /v1/vps "$B"; H=()
err_is "a 256-character key" 422 validation_error Idempotency-Key
H=("Idempotency-Key: create-once-1"); KEY=$P api POST /v1/vps "$B"; H=()
eq "another account's same key is its own -> 201" "$CODE" 201
check "... and a new VPS" [ "$(jget .data.id)" != "$FIRST_ID" ]
# Eight concurrent requests with one key: one VPS, eight equal answers.
for i in $(seq 1 8); do
        curl -s -o "$T/race.$i" -w '%{http_code}\n' -H "Authorization: Bearer $I" \
                -H 'Content-Type: application/json' -H 'Idempotency-Key: race-1' \
                -d '{"name":"race","size":"standard-1vcpu-1gb","image":"debian-12"}' "$API/v1/vps" >>"$T/race.codes" &
done
wait_for 30 "8 answers" bash -c "[ \$(wc -l <$T/race.codes) -eq 8 ]"
eq "concurrent retries: all 201" "$(grep -c '^201$' "$T/race.codes")" 8
eq "concurrent retries: all the same VPS" "$(cat "$T"/race.[1-8] | jq -r .data.id | sort -u | wc -l)" 1
eq "concurrent retries: one VPS made" "$(KEY=$I api GET '/v1/vps?name=race'; jget '.data | length')" 1
H=("Idempotency-Key: act-1"); KEY=$I api POST "/v1/vps/$FIRST_ID/actions" '{"action":"reboot"}'; H=()
eq "action with a key -> 202" "$CODE" 202
H=("Idempotency-Key: act-1"); KEY=$I api POST "/v1/vps/$FIRST_ID/actions" '{"action":"reboot"}'; H=()
eq "action retried -> 202, a replay" "$CODE/$(hdr Idempotent-Replayed)" "202/true"
H=("Idempotency-Key: act-1"); KEY=$I api POST "/v1/vps/$FIRST_ID/actions" '{"action":"shutdown"}'; H=()
err_is "the action's key with another action" 422 validation_error Idempotency-Key

# --- SSH keys: real keys from ssh-keygen, fingerprints as OpenSSH prints them
command -v ssh-keygen >/dev/null || fatal "ssh-keygen is missing (scripts/install-deps installs openssh-client)"
S=$(new_account sshkeys) || fatal "account sshkeys"
ssh-keygen -q -t ed25519 -N '' -C 'alice@laptop' -f "$T/ed" || fatal "ssh-keygen ed25519"
ssh-keygen -q -t rsa -b 3072 -N '' -C 'rsa key' -f "$T/rsa" || fatal "ssh-keygen rsa"
ssh-keygen -q -t ecdsa -b 384 -N '' -f "$T/ec" || fatal "ssh-keygen ecdsa"
ssh-keygen -q -t rsa -b 1024 -N '' -f "$T/weak" 2>/dev/null || fatal "ssh-keygen rsa 1024"
fp() { ssh-keygen -lf "$1" | awk '{print $2}'; }
mkkey() { KEY=$S api POST /v1/ssh_keys "$(jq -nc --arg k "$(cat "$1")" --arg n "${2-}" 'if $n == "" then {public_key: $k} else {name: $n, public_key: $k} end')"; }
mkkey "$T/ed.pub"
eq "ed25519 key -> 201" "$CODE" 201
ED_ID=$(jget .data.id)
match "its id" "$ED_ID" '^ssh_[0-9a-z]{13}$'
eq "fingerprint as ssh-keygen -l" "$(jget .data.fingerprint)" "$(fp "$T/ed.pub")"
eq "named after its comment" "$(jget .data.name)" "alice@laptop"
eq "type and bits" "$(jget .data.type)/$(jget .data.bits)" "ssh-ed25519/256"
eq "Location" "$(hdr Location)" "/v1/ssh_keys/$ED_ID"
mkkey "$T/rsa.pub" "work"
eq "rsa 3072 -> 201" "$CODE/$(jget .data.bits)/$(jget .data.name)" "201/3072/work"
eq "rsa fingerprint" "$(jget .data.fingerprint)" "$(fp "$T/rsa.pub")"
mkkey "$T/ec.pub"
eq "ecdsa 384 -> 201" "$CODE/$(jget .data.type)" "201/ecdsa-sha2-nistp384"
eq "ecdsa fingerprint" "$(jget .data.fingerprint)" "$(fp "$T/ec.pub")"
mkkey "$T/weak.pub"
err_is "rsa 1024" 422 validation_error public_key
mkkey "$T/ed.pub" again
err_is "the same key twice" 422 validation_error public_key
check "... naming the key it already is" bash -c "jq -r .error.message <<<'$BODY' | grep -q '$ED_ID'"
KEY=$S api POST /v1/ssh_keys '{"public_key":"ssh-ed25519 AAAAnotbase64!!"}'
err_is "garbage key" 422 validation_error public_key
KEY=$S api POST /v1/ssh_keys '{"name":"x"}'
err_is "no public_key" 422 validation_error public_key
KEY=$S api POST /v1/ssh_keys "$(jq -nc --arg k "$(cat "$T/ec.pub")" '{name: 5, public_key: $k}')"
err_is "name of the wrong type" 422 validation_error name
KEY=$S api GET /v1/ssh_keys
eq "list: three keys" "$(jget '.data | length')" 3
KEY=$S api GET "/v1/ssh_keys?limit=2"
eq "list pages too" "$(jget '.data | length')/$([ "$(jget .next_cursor)" != null ] && echo more)" "2/more"
KEY=$S api GET "/v1/ssh_keys/$ED_ID"
eq "get one" "$CODE/$(jget .data.public_key)" "200/$(cat "$T/ed.pub")"
KEY=$A api GET "/v1/ssh_keys/$ED_ID"
err_is "another account's key" 404 not_found
KEY=$A api DELETE "/v1/ssh_keys/$ED_ID"
err_is "another account deletes it" 404 not_found
KEY=$S api POST /v1/vps "{\"name\":\"withkey\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"ssh_keys\":[\"$ED_ID\"]}"
eq "VPS with its account's key -> 201" "$CODE" 201
KEY=$A api POST /v1/vps "{\"name\":\"stolen\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"ssh_keys\":[\"$ED_ID\"]}"
err_is "VPS with another account's key" 422 validation_error ssh_keys
KEY=$S api DELETE "/v1/ssh_keys/$ED_ID"
eq "delete -> 204" "$CODE" 204
KEY=$S api GET "/v1/ssh_keys/$ED_ID"
err_is "deleted key" 404 not_found
KEY=$S api PUT /v1/ssh_keys
err_is "PUT on the list" 405 method_not_allowed
# A long comment in a 2-byte script names the key cut at a character, not inside one.
ssh-keygen -q -t ed25519 -N '' -C "$(printf 'é%.0s' $(seq 1 40))" -f "$T/utf" || fatal "ssh-keygen utf"
mkkey "$T/utf.pub"
eq "key with a 40-character non-ASCII comment -> 201" "$CODE" 201
eq "... named with 31 of them (63 bytes at most)" "$(jget .data.name | wc -m)" 32
eq "... and listed" "$(KEY=$S api GET /v1/ssh_keys; jget '[.data[] | select(.fingerprint != null)] | length')" 3
KEY=$S api GET "/v1/vps?region=&name="
eq "empty filters mean no filter" "$CODE/$(jget '.data | length')" "200/1"

# --- templates: catalog, deploy (config checked, secrets never shown), deployments
D=$(new_account deployer enterprise) || fatal "account deployer"
KEY=$D api GET /v1/templates
eq "templates: the catalog" "$(jget '[.data[].id] | join(",")')" "postgres,mysql,redis,wordpress"
eq "templates: the spec's fields" "$(jget '.data[0] | [.name, .category, (.versions | join("/"))] | join(" ")')" "PostgreSQL database 16/15/14"
eq "templates: a typed config schema" "$(jget '.data[0].config | map(.name + ":" + .type) | join(",")')" \
        "postgres_user:string,postgres_db:string,postgres_password:string"
SECRET=Very-Secret-Pass.123
KEY=$D api POST /v1/templates/deploy "{\"template\":\"postgres\",\"name\":\"my-database\",\"version\":\"16\",\"config\":{\"postgres_user\":\"admin\",\"postgres_db\":\"myapp\",\"postgres_password\":\"$SECRET\"}}"
eq "deploy the spec's example -> 201" "$CODE" 201
DEP=$(jget .data.id); DEP_VPS=$(jget .data.vps_id)
match "a deployment id" "$DEP" '^dep_[0-9a-z]{13}$'
eq "Location" "$(hdr Location)" "/v1/templates/deployments/$DEP"
eq "its config, without the password" "$(jq -c .data.config <<<"$BODY")" '{"postgres_user":"admin","postgres_db":"myapp"}'
check "the secret is never in an answer" bash -c "! grep -q '$SECRET' <<<'$BODY'"
check "its VPS runs (the app installs on first boot)" wait_status "$D" "$DEP_VPS" running 20
KEY=$D api GET "/v1/templates/deployments/$DEP"
eq "deployment status follows its VPS" "$(jget .data.status)" running
KEY=$D api GET /v1/templates/deployments
eq "deployments: listed" "$(jget '[.data[].id] | join(",")')" "$DEP"
check "listed without the secret" bash -c "! grep -q '$SECRET' <<<'$BODY'"
VM_NUM=$(broker_sql "SELECT vm_id FROM deployments WHERE template = 'postgres'")
UD=$(broker_sql "SELECT user_data FROM vms WHERE id = $VM_NUM")
check "the VPS's cloud-init user-data creates the role with that password" \
        grep -q "CREATE ROLE admin LOGIN PASSWORD ''$SECRET''" <<<"$UD"
KEY=$D api POST /v1/templates/deploy '{"template":"redis","name":"cache"}'
eq "redis with no config: defaults and a generated password -> 201" "$CODE/$(jq -c .data.config <<<"$BODY")" '201/{"maxmemory_mb":256}'
KEY=$D api POST /v1/templates/deploy '{"template":"oracle","name":"x"}'
err_is "unknown template" 422 validation_error template
check "... lists the templates" jq -e '.error.details.allowed | index("wordpress")' <<<"$BODY"
KEY=$D api POST /v1/templates/deploy '{"template":"postgres","name":"x","version":"9.6","config":{"postgres_user":"a","postgres_db":"b"}}'
err_is "unknown version" 422 validation_error version
eq "... lists the versions" "$(jq -c .error.details.allowed <<<"$BODY")" '["16","15","14"]'
KEY=$D api POST /v1/templates/deploy '{"template":"postgres","name":"x","config":{"postgres_user":"Robert\u0027); DROP","postgres_db":"b"}}'
err_is "a config value out of its class" 422 validation_error config.postgres_user
KEY=$D api POST /v1/templates/deploy '{"template":"postgres","name":"x","config":{"postgres_db":"b"}}'
err_is "a required config key missing" 422 validation_error config.postgres_user
KEY=$D api POST /v1/templates/deploy '{"template":"postgres","name":"x","config":{"postgres_user":"a","postgres_db":"b","port":5433}}'
err_is "a config key the template does not take" 422 validation_error config.port
KEY=$D api POST /v1/templates/deploy '{"template":"mysql","name":"bad name"}'
err_is "a bad name" 422 validation_error name
eq "nothing was made by the refused ones" "$(KEY=$D api GET /v1/templates/deployments; jget '.data | length')" 2
H=("Idempotency-Key: dep-1"); KEY=$D api POST /v1/templates/deploy '{"template":"wordpress","name":"blog","config":{"site_title":"My blog","admin_user":"me","admin_email":"me@example.org"}}'; H=()
W1=$BODY
H=("Idempotency-Key: dep-1"); KEY=$D api POST /v1/templates/deploy '{"template":"wordpress","name":"blog","config":{"site_title":"My blog","admin_user":"me","admin_email":"me@example.org"}}'; H=()
eq "deploy retried with its key: the first answer" "$CODE/$BODY" "201/$W1"
eq "... and one deployment made" "$(KEY=$D api GET /v1/templates/deployments; jget '.data | length')" 3
KEY=$A api GET "/v1/templates/deployments/$DEP"
err_is "another account's deployment" 404 not_found
KEY=$A api DELETE "/v1/templates/deployments/$DEP"
err_is "another account deletes it" 404 not_found
KEY=$D api DELETE "/v1/templates/deployments/$DEP"
eq "delete a deployment -> 204" "$CODE" 204
KEY=$D api GET "/v1/vps/$DEP_VPS"
err_is "its VPS is gone with it" 404 not_found
KEY=$D api GET "/v1/templates/deployments/$DEP"
err_is "the deployment is gone" 404 not_found
KEY=$D api PUT /v1/templates
err_is "PUT on the catalog" 405 method_not_allowed
exit 0
