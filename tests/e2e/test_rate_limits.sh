# Rate limits per API key, as the spec's table: Free 60/min burst 10, Pro
# 300/min burst 50, Enterprise 1000/min burst 100; headers on every answer
# to a known key; 429 rate_limited with Retry-After past the burst.
RATE_LIMITS=1
source "$(dirname "$0")/lib.sh"

start_broker || fatal "broker starts"
F=$(new_account free-acct free) || fatal "account free"
P=$(new_account pro-acct pro) || fatal "account pro"
E=$(new_account ent-acct enterprise) || fatal "account enterprise"

KEY=$F api GET /v1/vps
eq "first request: 200" "$CODE" 200
eq "X-RateLimit-Limit is the tier's per minute" "$(hdr X-RateLimit-Limit)" 60
eq "X-RateLimit-Remaining after one" "$(hdr X-RateLimit-Remaining)" 9
match "X-RateLimit-Reset: seconds until full again" "$(hdr X-RateLimit-Reset)" '^[12]$'
# A burst: curl sends them back to back, on one connection.
# BURST_MS is how long it took: what may refill meanwhile is bounded by it.
burst() { # KEY N -> one status per line
        local k=$1 n=$2 i args=() t0
        for i in $(seq 1 "$n"); do args+=(-o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $k" "$API/v1/vps"); done
        t0=$(date +%s%N)
        curl -s "${args[@]}"
        BURST_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
# within BURST PER_MINUTE: exactly the burst passes, plus what refilled in BURST_MS (+1 for rounding)
within() { local lo=$1 per=$2; [ "$ok_n" -ge "$lo" ] && [ "$ok_n" -le $((lo + (BURST_MS * per + 59999) / 60000 + 1)) ]; }
burst "$F" 20 >"$T/free" # (file write, not a subshell: BURST_MS stays)
ok_n=$(grep -c '^200$' "$T/free")
check "free: the rest of the burst of 10 passes, then 429 ($ok_n of 20 in $BURST_MS ms)" within 9 60
eq "free: the others are 429" "$(grep -c '^429$' "$T/free")" $((20 - ok_n))
KEY=$F api GET /v1/vps
eq "past the burst: 429" "$CODE" 429
eq "error.code rate_limited" "$(jget .error.code)" rate_limited
match "Retry-After: whole seconds" "$(hdr Retry-After)" '^[1-9][0-9]*$'
eq "headers on a 429 too: none left" "$(hdr X-RateLimit-Remaining)" 0
burst "$P" 60 >"$T/pro"
ok_n=$(grep -c '^200$' "$T/pro")
check "pro: its burst of 50 passes ($ok_n of 60 in $BURST_MS ms)" within 50 300
burst "$E" 120 >"$T/ent"
ok_n=$(grep -c '^200$' "$T/ent")
check "enterprise: its burst of 100 passes ($ok_n of 120 in $BURST_MS ms)" within 100 1000
KEY=$F api GET /v1/vps
eq "limits are per key: free is still limited" "$CODE" 429
K2=$(ctl key create free-acct 2>/dev/null | head -1)
KEY=$K2 api GET /v1/vps
eq "another key of the same account has its own bucket" "$CODE" 200
sleep 1.1
KEY=$F api GET /v1/vps
eq "a second later, a token is back (60/min)" "$CODE" 200
KEY= api GET /v1/vps
eq "no key: 401, no rate headers" "$CODE/$(hdr X-RateLimit-Limit)" "401/"
exit 0
