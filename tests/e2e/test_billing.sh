# Prepaid billing end to end: a broker with billing on, an agent on
# libvirt's test driver. tasmanctl credit add/show and price list; an order
# the credit does not cover is refused with 402 and changes nothing; one
# it covers is made; midnights missed while the broker was down are
# invoiced once when it starts again.
source "$(dirname "$0")/lib.sh"

free_port TILAA_PORT || fatal "a port for the Tilaa API"
TILAA=http://127.0.0.1:$TILAA_PORT
start_broker --billing=1 --tilaa_listen="127.0.0.1:$TILAA_PORT" || fatal "broker starts with billing on"
start_agent hv1
wait_node_up hv1 || fatal "agent joins and its node is up"
ok "broker (billing on) and agent start"

A=$(new_account acme pro) || fatal "tasmanctl makes an account and a key"
SMALL='{"name":"web1","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'

# --- prices
ctl --json price list >"$T/prices" || not_ok "price list"
eq "price list: the smallest size costs 6.00 a month" \
        "$(jq -r '.[] | select(.size == "standard-1vcpu-1gb") | .month' "$T/prices")" 6.00
eq "price list: and 0.20 a day (6.00 * 12 / 365, rounded)" \
        "$(jq -r '.[] | select(.size == "standard-1vcpu-1gb") | .day_cents' "$T/prices")" 20

# --- no credit: refused, nothing changes
KEY=$A api POST /v1/vps "$SMALL"
eq "POST /v1/vps without credit -> 402" "$CODE" 402
eq "402: error.code insufficient_credit" "$(jget .error.code)" insufficient_credit
match "402: the message gives the figures" "$(jget .error.message)" "credit \(EUR 0\.00\).*EUR 0\.20"
KEY=$A api GET /v1/vps
eq "the refused order made no VPS" "$(jget '.data | length')" 0
eq "the refused order placed nothing on the node" "$(node_field hv1 .guests)" 0
ctl --json credit show acme >"$T/credit" || not_ok "credit show"
eq "the refused order charged nothing" "$(jq -r .balance_cents "$T/credit")" 0
eq "credit show: billing is on" "$(jq -r .billing "$T/credit")" true

# The Tilaa API's orders are held to the same credit.
ctl api-user create acme ops@acme.test --password acme-pass-1 >/dev/null || fatal "Tilaa API user"
TPL=$(curl -s -u ops@acme.test:acme-pass-1 "$TILAA/v1/templates" | jq -r '.templates[] | select(.name | startswith("ubuntu-24.04")) | .id')
TCODE=$(curl -s -o "$T/tbody" -w '%{http_code}' -u ops@acme.test:acme-pass-1 "$TILAA/v1/virtual_machines" \
        -d name=tvm -d ram=1024 -d storage=20 -d storage_type=ssd -d template="$TPL")
eq "Tilaa VM add without credit -> 402" "$TCODE" 402
eq "402: status ERROR" "$(jq -r .status "$T/tbody")" ERROR
match "402: the message says why" "$(jq -r .message "$T/tbody")" "Insufficient funds: .*credit \(EUR 0\.00\)"
eq "the refused Tilaa order made no VM" "$(curl -s -u ops@acme.test:acme-pass-1 "$TILAA/v1/virtual_machines" | jq '.virtual_machines | length')" 0

KEY=$A api POST /v1/templates/deploy '{"template":"redis","name":"cache"}'
eq "POST /v1/templates/deploy without credit -> 402" "$CODE" 402
eq "deploy 402: error.code insufficient_credit" "$(jget .error.code)" insufficient_credit
KEY=$A api GET /v1/templates/deployments
eq "the refused deploy made no deployment" "$(jget '.data | length')" 0

# --- tasmanctl credit add: strict amounts
for bad in 12.505 abc -1 0 0.00 1,50 " 5" 5e2 1000000.01 ""; do
        ctl credit add acme "$bad" >/dev/null 2>&1
        eq "credit add '$bad' is a usage error (exit 2)" "$?" 2
done
ctl credit add nobody 1 >/dev/null 2>&1
eq "credit add to an unknown account: exit 1" "$?" 1
out=$(ctl credit add acme 0.2) || not_ok "credit add acme 0.2"
match "credit add prints the balance" "$out" "balance EUR 0\.20"

# --- covered: made
KEY=$A api POST /v1/vps "$SMALL"
eq "POST /v1/vps with a day's credit -> 201" "$CODE" 201
ID1=$(jget .data.id)
KEY=$A api POST /v1/vps '{"name":"web2","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "a second VPS the credit does not cover a day of both -> 402" "$CODE" 402
ctl credit add acme 0.20 >/dev/null || not_ok "credit add acme 0.20"
KEY=$A api POST /v1/vps '{"name":"web2","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "with more credit the second is made -> 201" "$CODE" 201
ID2=$(jget .data.id)
check "the first VPS runs" wait_status "$A" "$ID1" running
ctl --json credit show acme >"$T/credit"
eq "credit show: 2 services" "$(jq -r .services "$T/credit")" 2
eq "credit show: EUR 0.40 a day" "$(jq -r .daily "$T/credit")" 0.40
eq "credit show: nothing invoiced yet" "$(jq -r '.invoice_lines | length' "$T/credit")" 0

# --- the broker is down over two midnights: at start they are invoiced once
stop_pid "$BROKER_PID"
today=$(TZ=Europe/Amsterdam date +%F)
tday=$(($(date -u -d "$today" +%s) / 86400))
past=$((($(date +%s) - 5 * 86400) * 1000))
broker_sql "UPDATE meta SET value = $((tday - 3)) WHERE key = 'billing_day';
        UPDATE vms SET created_at = $past; UPDATE billable SET created_at = $past;" ||
        not_ok "SQL behind the broker's back turns the clock back"
start_broker --billing=1 || fatal "broker restarts"
lines() { ctl --json credit show acme | jq -r '.invoice_lines | length'; }
check "after the restart the two missed days are invoiced" wait_for 10 "4 lines" bash -c "[ \"\$(\"$BUILD/tasmanctl\" --broker $ADMIN --json credit show acme | jq '.invoice_lines | length')\" == 4 ]"
ctl --json credit show acme >"$T/credit"
eq "each VPS once a day" "$(jq -r '[.invoice_lines[] | .vps] | sort | join(",")' "$T/credit")" \
        "$(printf '%s\n' "$ID1" "$ID1" "$ID2" "$ID2" | sort | paste -sd,)"
eq "invoice days are the two before today" \
        "$(jq -r '[.invoice_lines[] | .date] | unique | join(",")' "$T/credit")" \
        "$(TZ=Europe/Amsterdam date -d "$today -2 days" +%F),$(TZ=Europe/Amsterdam date -d "$today -1 day" +%F)"
eq "the balance went below zero: 0.40 - 4 * 0.20" "$(jq -r .balance "$T/credit")" -0.40
KEY=$A api GET "/v1/vps/$ID1"
eq "the VPS keeps running with a negative balance" "$(jget .data.status)" running
KEY=$A api POST /v1/vps '{"name":"web3","size":"standard-1vcpu-1gb","image":"ubuntu-24.04"}'
eq "a new order with a negative balance -> 402" "$CODE" 402
out=$(ctl credit show acme)
match "credit show prints the invoice lines" "$out" "Recent invoice lines"

stop_pid "$BROKER_PID"
start_broker --billing=1 || fatal "broker restarts again"
sleep 0.5
eq "a second restart invoices nothing more" "$(lines)" 4
eq "and charges nothing more" "$(ctl --json credit show acme | jq -r .balance_cents)" -40

# --- prices: admins change them for orders from now on
ctl price set standard-1vcpu-1gb 7.30 >/dev/null || not_ok "price set"
ctl --json price list >"$T/prices"
eq "price set: 7.30 a month" \
        "$(jq -r '.[] | select(.size == "standard-1vcpu-1gb") | .month' "$T/prices")" 7.30
eq "price set: 0.24 a day" \
        "$(jq -r '.[] | select(.size == "standard-1vcpu-1gb") | .day' "$T/prices")" 0.24
eq "the VPS ordered before keep their price" "$(ctl --json credit show acme | jq -r .daily)" 0.40
for bad in "standard-1vcpu-1gb 7.305" "standard-1vcpu-1gb -1" "Bad_Size 1.00"; do
        # shellcheck disable=SC2086
        ctl price set $bad >/dev/null 2>&1
        eq "price set $bad is a usage error (exit 2)" "$?" 2
done
