# The Tilaa API document's own curl examples (tests/fixtures/tilaa-examples.txt,
# verbatim), replayed in the document's order against a broker with only
# the base URL, the login and ids substituted (and the example's
# placeholders for a cancel date and an SSH key, which must be real ones
# here). Each answer must have the example answer's shape: the same keys and
# the same JSON types all the way down (an answer's null may stand for an
# example's value: "cancelled" of a VM that is not cancelled), and times in
# RFC 3339 where the example has a time.
source "$(dirname "$0")/lib.sh"

FIX=$ROOT/tests/fixtures/tilaa-examples.txt
free_port TILAA_PORT || fatal "a port for the Tilaa API"
TILAA=http://127.0.0.1:$TILAA_PORT
start_broker --tilaa_listen="127.0.0.1:$TILAA_PORT" || fatal "broker starts"
mkdir -p "$T/hv1/rescue" && : >"$T/hv1/rescue/vmlinuz"
start_agent hv1 --hdd_gb=10000
wait_node_up hv1 || fatal "agent joins"
ctl pool add tas-1 --ipv4 198.51.100.0/24 --gateway4 198.51.100.1 --ipv6 2001:db8::/64 \
        --gateway6 2001:db8::1 >/dev/null || fatal "address pool"
new_account replay >/dev/null || fatal "account"
LOGIN=ex@replay.test:replay-password
ctl api-user create replay ex@replay.test --password replay-password --first-name Jo \
        --last-name Doe >/dev/null || fatal "API user"
ok "broker, agent, account and API user"

# t METHOD PATH [curl args]: the setup's own requests
t() {
        local m=$1 p=$2; shift 2
        BODY=$(curl -s -X "$m" -u "$LOGIN" "$@" "$TILAA$p")
}
wait_vm() {
        local end=$((SECONDS + 20))
        while [ $SECONDS -lt $end ]; do
                t GET "/v1/virtual_machines/$1"
                [ "$(jq -r .virtual_machine.status <<<"$BODY")" == "$2" ] && return 0
                sleep 0.05
        done
        echo "# vm $1 is not $2"
        return 1
}
t GET /v1/templates
TPL=$(jq -r '.templates[] | select(.name | startswith("debian-12")) | .id' <<<"$BODY")
for n in web cancelme; do
        t POST /v1/virtual_machines -d name=$n -d ram=1024 -d storage=25 -d storage_type=ssd -d "template=$TPL"
        printf -v "VM_$n" %s "$(jq -r .id <<<"$BODY")"
done
check "the setup's VMs run" wait_vm "$VM_web" running
check "the setup's VMs run (2)" wait_vm "$VM_cancelme" running
# a profile and a key before the document lists them (no list is empty)
t POST /v1/metadata -d name=setup -d user_data=#cloud-config
ssh-keygen -q -t ed25519 -N '' -C setup -f "$T/k0" && ssh-keygen -q -t ed25519 -N '' -C ex -f "$T/k1" || fatal "ssh-keygen"
t POST /v1/ssh_keys -d label=setup --data-urlencode "key=$(cat "$T/k0.pub")"
t GET /v1/virtual_machines/$VM_cancelme/cancel
DATE=$(jq -r '.dates[0]' <<<"$BODY")

# shape ANSWER EXAMPLE: the paths where they differ (none: the same shape)
shape_diff() {
        jq -n -r --argjson a "$1" --argjson e "$2" '
          def time_like: type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{1,2}T");
          def rfc3339: test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}$");
          def cmp($a; $e; $p):
            if ($a | type) == "null" and ($e | type) != "null" then empty
            elif ($a | type) != ($e | type) then "\($p): \($a | type), the example has \($e | type)"
            elif ($e | type) == "object" then
              (if ($a | keys) != ($e | keys) then
                 "\($p): keys \($a | keys | join(",")), the example has \($e | keys | join(","))"
               else empty end),
              ($e | keys[] as $k | select($a | has($k)) | cmp($a[$k]; $e[$k]; "\($p).\($k)"))
            elif ($e | type) == "array" then
              if ($e | length) == 0 then empty
              elif ($a | length) == 0 then "\($p): empty, the example is not"
              else ($a | to_entries[] | cmp(.value; $e[0]; "\($p)[\(.key)]")) end
            elif ($e | time_like) and (($a | rfc3339) | not) then "\($p): \($a) is not RFC 3339"
            else empty end;
          cmp($a; $e; "")'
}

# the id each example's [id] stands for
id_for() {
        case $1 in
        *"/cancel"*) echo "$VM_cancelme" ;;
        *"/v1/virtual_machines/"*) echo "$VM_web" ;;
        *"/v1/snapshots/"*) echo "$SNAP" ;;
        *"/v1/metadata/"*) echo "$MD" ;;
        *"/v1/ssh_keys/"*) echo "$KEYID" ;;
        esac
}

n=0
SNAP= MD= KEYID=
title= cmd= want=
run_example() {
        [ -n "$cmd" ] || return 0
        n=$((n + 1))
        local id line
        id=$(id_for "$cmd")
        line=${cmd//https:\/\/api.tilaa.com/$TILAA}
        line=${line//email:password/$LOGIN}
        line=${line//emailPassword/$LOGIN}
        line=${line//\[id\]/$id}
        line=${line//\[task\]/start}
        line=${line//template=381/template=$TPL}
        line=${line//snapshot=42/snapshot=$SNAP}
        line=${line//date=2014-04-01/date=$DATE}
        local keypat='"ssh-rsa AAAAB…"' key
        key=$(cat "$T/k1.pub")
        key=${key//+/%2B} # curl -d sends it as it is, and a form's '+' is a space
        line=${line//"$keypat"/"\"$key\""}
        if [[ $line == *"| jq "* ]]; then
                # the introduction's pipe into jq: every address of every VM
                local out
                out=$(eval "$line")
                eq "example $n ($title): jq lists the VMs' addresses" "$(wc -l <<<"$out")" 4
                match "example $n: they are addresses (JSON strings)" "$(head -1 <<<"$out")" '^"198\.51\.100\.'
                return 0
        fi
        local -a args
        eval "args=( ${line#curl } )"
        local code body
        code=$(curl -o "$T/ex.json" -w '%{http_code}' "${args[@]}")
        body=$(cat "$T/ex.json")
        eq "example $n ($title): 200 OK" "$code/$(jq -r .status <<<"$body")" 200/OK
        if [ -n "$want" ]; then
                local ex diff
                ex=$(sed -e 's/, \.\.\. \]/ ]/g' -e 's/, \.\.\. }/ }/g' <<<"$want")
                if ! jq -e . >/dev/null 2>&1 <<<"$ex"; then
                        not_ok "example $n ($title): the document's answer does not parse"
                        return 0
                fi
                diff=$(shape_diff "$body" "$ex" 2>&1)
                if [ -z "$diff" ]; then
                        ok "example $n ($title): the answer has the example's shape"
                else
                        not_ok "example $n ($title): shape differs: $(head -3 <<<"$diff" | paste -sd';')"
                        echo "# answer: $body"
                fi
        fi
        # what the next examples need
        case $title in
        "POST /v1/virtual_machines/[id]/create_snapshot")
                wait_for 20 "snapshot mysnap" bash -c "curl -s -u '$LOGIN' $TILAA/v1/snapshots | jq -e '.snapshots[] | select(.name == \"mysnap\" and .status == \"success\")'" ||
                        not_ok "the example's snapshot is made"
                t GET /v1/snapshots
                SNAP=$(jq -r '.snapshots[] | select(.name == "mysnap") | .id' <<<"$BODY")
                ;;
        "POST /v1/virtual_machines/[id]/restore_snapshot")
                wait_vm "$VM_web" running || not_ok "restored, the VM runs"
                ;;
        "POST /v1/metadata") MD=$(jq -r .id <<<"$body") ;;
        "POST /v1/ssh_keys")
                t GET /v1/ssh_keys
                KEYID=$(jq -r '.ssh_keys[] | select(.label == "newkey") | .id' <<<"$BODY")
                ;;
        "GET /v1/virtual_machines/[id]/[task]") wait_vm "$VM_web" running || not_ok "the VM runs" ;;
        esac
}

while IFS= read -r l; do
        case $l in
        "## "*) run_example; title=${l#\#\# } cmd= want= ;;
        curl*) cmd=$l ;;
        "{"*) want=$l ;;
        esac
done <"$FIX"
run_example
eq "every example of the document was replayed" "$n" 27
