#!/usr/bin/env bash
# etcdctl member flows against keel processes: `member add` and starting the new member
# from the environment etcdctl prints (`--initial-cluster-state existing`), a learner
# added, started and promoted, `member update`, `member remove` of the leader and of a
# learner-turned-voter — 3 → 5 → 3 members while a client keeps writing, with every
# acknowledged write present at the end. Needs etcdctl and a release build of keel.
# Loopback only; every process is stopped at exit. Usage: members.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

IC="k1=http://127.0.0.1:26380,k2=http://127.0.0.1:27380,k3=http://127.0.0.1:28380"
EPS="127.0.0.1:26379,127.0.0.1:27379,127.0.0.1:28379"
E="etcdctl --endpoints=$EPS --command-timeout=5s"
start_keel k1 26379 26380 "$IC"
start_keel k2 27379 27380 "$IC"
start_keel k3 28379 28380 "$IC"
for p in 26379 27379 28379; do wait_healthy 127.0.0.1:$p; done
$E put before value >/dev/null
ok "3 members up"

acked="$work/acked"
: >"$acked"
( i=0; while [ $i -lt 100000 ]; do
    if $E put "loop/$i" "$i" >/dev/null 2>&1; then echo "$i" >>"$acked"; fi
    i=$((i + 1))
  done ) &
writer=$!
pids+=($writer)

cluster_hex=$($E member list -w json | python3 -c 'import json,sys; print(format(json.load(sys.stdin)["header"]["cluster_id"], "x"))')

# start_joiner NAME CLIENT_PORT PEER_PORT: starts a member from the ETCD_* lines `member
# add` printed (saved in $work/NAME.env), as the etcd docs tell operators to.
start_joiner() {
    local name=$1 cp=$2 pp=$3
    (
        set -a
        # shellcheck disable=SC1090
        source <(grep '^ETCD_' "$work/$name.env")
        set +a
        exec "$KEEL" --data-dir "$work/$name" \
            --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
            --listen-peer-urls "http://127.0.0.1:$pp" --heartbeat-interval 50 --election-timeout 500
    ) >>"$work/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_$name=$!"
}

member_id() { # name
    $E member list | awk -F', ' -v n="$1" '$3 == n { print $1 }'
}

# 3 → 4: a voter.
$E member add k4 --peer-urls=http://127.0.0.1:29380 >"$work/k4.env"
head -1 "$work/k4.env" | matches -E "^Member +[0-9a-f]{1,16} added to cluster +$cluster_hex\$" ||
    fail "member add output: $(cat "$work/k4.env")"
grep -qx 'ETCD_NAME="k4"' "$work/k4.env" || fail "ETCD_NAME: $(cat "$work/k4.env")"
grep -qx "ETCD_INITIAL_CLUSTER=\"k1=http://127.0.0.1:26380,k2=http://127.0.0.1:27380,k3=http://127.0.0.1:28380,k4=http://127.0.0.1:29380\"" "$work/k4.env" ||
    grep -q '^ETCD_INITIAL_CLUSTER=".*k4=http://127.0.0.1:29380' "$work/k4.env" || fail "ETCD_INITIAL_CLUSTER: $(cat "$work/k4.env")"
grep -qx 'ETCD_INITIAL_ADVERTISE_PEER_URLS="http://127.0.0.1:29380"' "$work/k4.env" || fail "advertise: $(cat "$work/k4.env")"
grep -qx 'ETCD_INITIAL_CLUSTER_STATE="existing"' "$work/k4.env" || fail "state: $(cat "$work/k4.env")"
$E member list | matches -E "^[0-9a-f]{1,16}, unstarted, , http://127.0.0.1:29380, , false\$" ||
    fail "unstarted member in member list: $($E member list)"
ok "member add k4: etcd's output and an unstarted member in the list"
start_joiner k4 29379 29380
wait_healthy 127.0.0.1:29379
[ "$(etcdctl --endpoints=127.0.0.1:29379 get before --print-value-only --consistency=s)" = value ] ||
    fail "k4 did not catch up"
$E member list | matches -E "^[0-9a-f]{1,16}, started, k4, http://127.0.0.1:29380, http://127.0.0.1:29379, false\$" ||
    fail "k4 started: $($E member list)"
ok "k4 started with --initial-cluster-state existing, caught up and published itself"

# 4 → 5: a learner, promoted once in sync.
$E member add k5 --learner --peer-urls=http://127.0.0.1:30380 >"$work/k5.env"
grep -qx 'ETCD_INITIAL_CLUSTER_STATE="existing"' "$work/k5.env" || fail "learner add: $(cat "$work/k5.env")"
k5=$(head -1 "$work/k5.env" | awk '{print $2}')
out=$($E member promote "$k5" 2>&1) && fail "promoted a learner that never ran: $out"
echo "$out" | matches "can only promote a learner member which is in sync with leader" || fail "promote error: $out"
ok "promoting a learner that has not caught up: etcd's error"
start_joiner k5 30379 30380
wait_healthy 127.0.0.1:30379
for _ in $(seq 1 100); do
    out=$($E member promote "$k5" 2>&1) && break
    sleep 0.2
done
echo "$out" | matches -E "^Member +$k5 promoted in cluster +$cluster_hex\$" || fail "promote: $out"
[ "$($E member list | grep -c ', false$')" = 5 ] || fail "5 voters: $($E member list)"
ok "learner k5 started, promoted: 5 voters"

# member update: a second peer URL for k2.
k2=$(member_id k2)
$E member update "$k2" --peer-urls=http://127.0.0.1:27380,http://127.0.0.1:27381 |
    matches -E "^Member +$k2 updated in cluster +$cluster_hex\$" || fail "member update"
$E member list | matches "^$k2, started, k2, http://127.0.0.1:27380,http://127.0.0.1:27381, " ||
    fail "updated peer URLs: $($E member list)"
ok "member update"

# 5 → 3: remove the leader (it hands over and stops), then k5.
leader=$(etcdctl --endpoints=$EPS,127.0.0.1:29379,127.0.0.1:30379 endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    st = s["Status"]
    if st["header"]["member_id"] == st["leader"]:
        print(format(st["leader"], "x")); break')
lname=$($E member list | awk -F', ' -v id="$leader" '$1 == id { print $3 }')
$E member remove "$leader" | matches -E "^Member +$leader removed from cluster +$cluster_hex\$" || fail "remove leader"
eval "lpid=\$pid_$lname"
for _ in $(seq 1 100); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$lpid" 2>/dev/null && fail "the removed leader $lname is still running"
wait "$lpid" && fail "the removed leader exited 0"
grep -q "permanently removed from the cluster" "$work/$lname.log" || fail "removed member's log: $(tail -3 "$work/$lname.log")"
ok "member remove of the leader $lname: a new leader takes over, $lname stops"
$E member remove "$k5" | matches "removed from cluster" || fail "remove k5"
for _ in $(seq 1 100); do kill -0 "$pid_k5" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid_k5" 2>/dev/null && fail "removed k5 still running"
[ "$($E member list | wc -l)" = 3 ] || fail "3 members: $($E member list)"
ok "back to 3 members"

sleep 1
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
n=$(wc -l <"$acked")
[ "$n" -gt 20 ] || fail "only $n writes acknowledged"
alive=$(for p in 26379 27379 28379 29379; do
    etcdctl --endpoints=127.0.0.1:$p --command-timeout=1s endpoint health >/dev/null 2>&1 && echo "127.0.0.1:$p"
done | paste -sd,)
etcdctl --endpoints="$alive" get loop/ --prefix --keys-only | grep -v '^$' | sed 's#loop/##' | LC_ALL=C sort >"$work/present"
missing=$(comm -23 <(LC_ALL=C sort -u "$acked") "$work/present" | head -5)
[ -z "$missing" ] || fail "acknowledged writes lost: $missing"
ok "3 → 5 → 3 under a write loop: all $n acknowledged writes present"

echo "$passed passed, 0 failed"
