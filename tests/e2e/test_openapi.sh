# GET /v1/openapi.json: the document is the one in the tree, spectral
# (spectral:oas) finds no error in it, and every operation, sent good and
# bad through prism in proxy mode to the broker, gets answers that match
# it (zero response violations). A broken copy of the document proves the
# check can fail. Tool versions are pinned in tests/contract/package-lock.json.
source "$(dirname "$0")/lib.sh"

C=$ROOT/tests/contract
command -v npm >/dev/null || fatal "npm is missing (scripts/install-deps installs nodejs and npm)"
if [ ! -x "$C/node_modules/.bin/prism" ] || [ ! -x "$C/node_modules/.bin/spectral" ]; then
        (cd "$C" && npm ci --no-audit --no-fund --loglevel=error) >"$T/npm.log" 2>&1 ||
                { cat "$T/npm.log"; fatal "npm ci in tests/contract (needs the npm registry)"; }
fi
PRISM=$C/node_modules/.bin/prism
SPECTRAL=$C/node_modules/.bin/spectral

start_broker || fatal "broker starts"
start_agent hv1
check "agent joins" wait_for 15 "node up" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json node list | jq -r '.[0].state')\" == up ]"

curl -s "$API/v1/openapi.json" -o "$T/openapi.json"
check "GET /v1/openapi.json without a key: the document in the tree" \
        bash -c "diff <(jq -S . '$T/openapi.json') <(jq -S . '$ROOT/broker/openapi.json')"
eq "OpenAPI 3.0" "$(jq -r .openapi "$T/openapi.json" | cut -d. -f1-2)" 3.0
eq "every operation has an operationId" \
        "$(jq '[.paths[][] | objects | select(has("responses")) | select(has("operationId") | not)] | length' "$T/openapi.json")" 0
(cd "$C" && "$SPECTRAL" lint -q -r .spectral.yaml -f json -o "$T/spectral.json" "$T/openapi.json") >/dev/null 2>&1
eq "spectral:oas: zero errors" "$(jq '[.[] | select(.severity == 0)] | length' "$T/spectral.json")" 0

# Prism in front of the broker: NAME DOC -> port in PP_<NAME>
prism_on() {
        local port
        free_port port || return 1
        "$PRISM" proxy "$2" "$API/v1" --host 127.0.0.1 --port "$port" >"$T/prism-$1.log" 2>&1 &
        PIDS+=($!)
        printf -v "PP_$1" %s "$port"
        wait_for 90 "prism $1" curl -s -o /dev/null "http://127.0.0.1:$port/openapi.json"
}
check "prism proxies to the broker" prism_on good "$T/openapi.json"
K=$(new_account contract enterprise) || fatal "account"
KO=$(new_account contract-other) || fatal "account other"
ssh-keygen -q -t ed25519 -N '' -C 'contract' -f "$T/key" || fatal "ssh-keygen"
# every operation, good and bad, through prism at port $1
exercise() {
        local p=http://127.0.0.1:$1 a=(-s -o /dev/null -w '%{http_code} ') j=(-H 'Content-Type: application/json')
        local h=(-H "Authorization: Bearer $K") id kid
        curl "${a[@]}" "$p/openapi.json"
        curl "${a[@]}" "${h[@]}" "$p/vps"
        curl "${a[@]}" "$p/vps"                                              # no key
        curl "${a[@]}" -H "Authorization: Bearer tas_$(printf '0%.0s' $(seq 40))" "$p/vps"
        id=$(curl -s "${h[@]}" "${j[@]}" -d '{"name":"c1","size":"standard-1vcpu-1gb","image":"debian-12"}' "$p/vps" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H 'Idempotency-Key: c2' -d '{"name":"c2","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","storage_type":"ssd","anti_affinity_group":"g"}' "$p/vps"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H 'Idempotency-Key: c2' -d '{"name":"c2","size":"standard-2vcpu-4gb","image":"ubuntu-24.04","storage_type":"ssd","anti_affinity_group":"g"}' "$p/vps"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"c3","size":"huge","image":"debian-12"}' "$p/vps"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"c3"}' "$p/vps"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":' "$p/vps"
        curl "${a[@]}" "${h[@]}" -H 'Content-Type: text/plain' -d 'x' "$p/vps"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d "{\"name\":\"$(printf 'x%.0s' $(seq 1 70000))\"}" "$p/vps"
        curl "${a[@]}" "${h[@]}" "$p/vps?limit=1"
        curl "${a[@]}" "${h[@]}" "$p/vps?limit=0"
        curl "${a[@]}" "${h[@]}" "$p/vps?status=running&region=tas-1&name=c1"
        curl "${a[@]}" "${h[@]}" "$p/vps/$id"
        curl "${a[@]}" "${h[@]}" "$p/vps/vps_0000000000000"
        curl "${a[@]}" -H "Authorization: Bearer $KO" "$p/vps/$id"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"action":"reboot"}' "$p/vps/$id/actions"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"action":"explode"}' "$p/vps/$id/actions"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"action":"start"}' "$p/vps/vps_0000000000000/actions"
        # snapshots: the agent (test driver) makes them at once
        sid=$(curl -s "${h[@]}" "${j[@]}" -H "Idempotency-Key: s1-$1" -d '{"name":"s1"}' "$p/vps/$id/snapshots" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H "Idempotency-Key: s1-$1" -d '{"name":"s1"}' "$p/vps/$id/snapshots"
        for _ in $(seq 200); do
                [ "$(curl -s "${h[@]}" "$p/vps/$id/snapshots/$sid" | jq -r .data.status)" = ready ] && break
                sleep 0.05
        done
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"s1"}' "$p/vps/$id/snapshots" # 409: the name is taken
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"s2","online":true,"overwrite":false}' "$p/vps/$id/snapshots"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"bad name"}' "$p/vps/$id/snapshots"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"x"}' "$p/vps/vps_0000000000000/snapshots"
        curl "${a[@]}" "${h[@]}" "$p/vps/$id/snapshots"
        curl "${a[@]}" -H "Authorization: Bearer $KO" "$p/vps/$id/snapshots"
        curl "${a[@]}" "${h[@]}" "$p/vps/$id/snapshots/$sid"
        curl "${a[@]}" "${h[@]}" "$p/vps/$id/snapshots/snap_0000000000000"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -X PATCH -d '{"name":"s1b"}' "$p/vps/$id/snapshots/$sid"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -X PATCH -d '{"name":7}' "$p/vps/$id/snapshots/$sid"
        curl "${a[@]}" "${h[@]}" -X POST "$p/vps/$id/snapshots/$sid/restore"
        curl "${a[@]}" "${h[@]}" -X POST "$p/vps/$id/snapshots/$sid/restore"
        for _ in $(seq 200); do
                [ "$(curl -s "${h[@]}" "$p/vps/$id" | jq -r .data.status)" != restoring ] && break
                sleep 0.05
        done
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/vps/$id/snapshots/$sid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/vps/$id/snapshots/snap_0000000000000"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d "{\"name\":\"c4\",\"size\":\"standard-1vcpu-1gb\",\"snapshot\":\"snap_0000000000000\"}" "$p/vps"
        curl "${a[@]}" "${h[@]}" "$p/vps/$id"
        kid=$(curl -s "${h[@]}" "${j[@]}" -d "$(jq -nc --arg k "$(cat "$T/key.pub")" '{public_key: $k}')" "$p/ssh_keys" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d "$(jq -nc --arg k "$(cat "$T/key.pub")" '{public_key: $k}')" "$p/ssh_keys"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"public_key":"ssh-rsa nope"}' "$p/ssh_keys"
        curl "${a[@]}" "${h[@]}" "$p/ssh_keys?limit=5"
        curl "${a[@]}" "${h[@]}" "$p/ssh_keys/$kid"
        curl "${a[@]}" -H "Authorization: Bearer $KO" "$p/ssh_keys/$kid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/ssh_keys/$kid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/ssh_keys/$kid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/vps/$id"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/vps/$id"
        curl "${a[@]}" "${h[@]}" "$p/templates"
        dep=$(curl -s "${h[@]}" "${j[@]}" -d '{"template":"postgres","name":"db","version":"16","config":{"postgres_user":"admin","postgres_db":"myapp"}}' "$p/templates/deploy" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"template":"redis","name":"cache"}' "$p/templates/deploy"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"template":"oracle","name":"x"}' "$p/templates/deploy"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"template":"postgres","name":"x","config":{"postgres_user":"BAD"}}' "$p/templates/deploy"
        curl "${a[@]}" "${h[@]}" "$p/templates/deployments?limit=1"
        curl "${a[@]}" "${h[@]}" "$p/templates/deployments/$dep"
        curl "${a[@]}" -H "Authorization: Bearer $KO" "$p/templates/deployments/$dep"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/templates/deployments/$dep"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/templates/deployments/$dep"
        # private networks
        nid=$(curl -s "${h[@]}" "${j[@]}" -d '{"name":"n1","cidr":"10.77.0.0/24"}' "$p/networks" | jq -r .data.id)
        n2=$(curl -s "${h[@]}" "${j[@]}" -H "Idempotency-Key: n2-$1" -d '{"name":"n2","cidr":"10.78.0.0/24"}' "$p/networks" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H "Idempotency-Key: n2-$1" -d '{"name":"n2","cidr":"10.78.0.0/24"}' "$p/networks"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"bad","cidr":"10.77.0.1/24"}' "$p/networks"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"wide","cidr":"10.77.0.0/16"}' "$p/networks"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"n3"}' "$p/networks"
        curl "${a[@]}" "${h[@]}" "$p/networks"
        curl "${a[@]}" "${h[@]}" "$p/networks/$nid"
        curl "${a[@]}" "${h[@]}" "$p/networks/net_0000000000000"
        curl "${a[@]}" -H "Authorization: Bearer $KO" "$p/networks/$nid"
        vid=$(curl -s "${h[@]}" "${j[@]}" -d "{\"name\":\"c5\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\",\"network\":\"$nid\"}" "$p/vps" | jq -r .data.id)
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"name":"c6","size":"standard-1vcpu-1gb","image":"debian-12","network":"net_0000000000000"}' "$p/vps"
        curl "${a[@]}" "${h[@]}" "$p/vps/$vid"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d "{\"vps_id\":\"$vid\"}" "$p/networks/$nid/attach"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H "Idempotency-Key: a2-$1" -d "{\"vps_id\":\"$vid\"}" "$p/networks/$n2/attach"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -H "Idempotency-Key: a2-$1" -d "{\"vps_id\":\"$vid\"}" "$p/networks/$n2/attach"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{}' "$p/networks/$nid/attach"
        curl "${a[@]}" "${h[@]}" "${j[@]}" -d '{"vps_id":"vps_0000000000000"}' "$p/networks/$nid/attach"
        curl "${a[@]}" "${h[@]}" "$p/networks/$nid/vpn-config"
        curl "${a[@]}" "${h[@]}" "$p/networks/net_0000000000000/vpn-config"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/networks/$nid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/vps/$vid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/networks/$nid"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/networks/$n2"
        curl "${a[@]}" "${h[@]}" -X DELETE "$p/networks/$nid"
        echo
}
exercise "$PP_good" >"$T/codes-good"
echo "# status codes: $(cat "$T/codes-good")"
for c in 200 201 202 204 401 404 409 413 415 422; do
        check "the run covered HTTP $c" grep -qw "$c" "$T/codes-good"
done
sleep 1 # prism logs after it answers
eq "prism: every answer matches the document (response violations)" \
        "$(grep -c 'Violation: response' "$T/prism-good.log")" 0
check "prism saw our deliberately bad requests (request violations)" grep -q 'Violation: request' "$T/prism-good.log"
grep 'Violation: response' "$T/prism-good.log" | head -5 | sed 's/^/# /'

# Prism answers an upstream 501 with a mock of its own (its forwarder
# treats 501 as "not implemented upstream"), so the one 501 the broker
# gives (vpn-config: no VPN integration here) is checked against the
# document directly, with the JSON Schema validator spectral brings.
schema_ok() { # BODY_FILE PATH METHOD STATUS: the body matches the document's answer
        (cd "$C" && node -e '
const fs = require("fs"), Ajv = require("ajv");
const [doc, body, path, method, status] = [JSON.parse(fs.readFileSync(process.argv[1])),
        JSON.parse(fs.readFileSync(process.argv[2])), ...process.argv.slice(3)];
const deref = (o) => o && o.$ref ? deref(o.$ref.slice(2).split("/").reduce((a, k) => a[k], doc)) : o;
const resp = deref(doc.paths[path][method].responses[status]);
const schema = JSON.parse(JSON.stringify(deref(resp.content["application/json"].schema)));
const ajv = new Ajv({ strict: false });
process.exit(ajv.validate(schema, body) ? 0 : 1);' "$T/openapi.json" "$1" "$2" "$3" "$4")
}
VN=$(KEY=$K api POST /v1/networks '{"name":"vpn","cidr":"10.99.0.0/24"}'; jget .data.id)
KEY=$K api GET "/v1/networks/$VN/vpn-config"
eq "vpn-config without a VPN integration: 501 not_implemented" "$CODE/$(jget .error.code)" 501/not_implemented
printf '%s' "$BODY" >"$T/vpn.json"
check "that 501 matches the document's answer for it" schema_ok "$T/vpn.json" /networks/{id}/vpn-config get 501
jq 'del(.error.message)' "$T/vpn.json" >"$T/vpn-bad.json"
if schema_ok "$T/vpn-bad.json" /networks/{id}/vpn-config get 501; then
        not_ok "a 501 without a message would not match (the check can fail)"
else
        ok "a 501 without a message would not match (the check can fail)"
fi

# The check can fail: a document that wants a field we never send.
jq '.components.schemas.Vps.required += ["no_such_field"]' "$T/openapi.json" >"$T/broken.json"
check "prism on a broken document" prism_on broken "$T/broken.json"
exercise "$PP_broken" >/dev/null
sleep 1
check "a broken document is caught (response violations reported)" grep -q 'Violation: response' "$T/prism-broken.log"
exit 0
