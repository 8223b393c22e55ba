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
exit 0
