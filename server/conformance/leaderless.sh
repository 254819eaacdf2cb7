#!/usr/bin/env bash
# A member cut off from its quorum, as etcdctl 3.4 sees it: the same checks against a
# 3-member etcd 3.4 and a 3-member keel, one after the other. Two members are killed
# (kill -9) and the third, with no leader:
# - lists "etcdserver: no leader" among its `endpoint status` errors;
# - ends an open `etcdctl watch` (clientv3 requires a leader for watches) with
#   "watch was canceled (etcdserver: no leader)", and refuses a new one the same way;
# - holds a put and a linearizable get until etcdctl's --command-timeout passes
#   ("context deadline exceeded"), while a serializable get answers;
# - completes a put that waits for a leader once a peer comes back.
# Needs etcd, etcdctl (Debian etcd-server, etcd-client) and a release build of keel.
# Loopback only; every process is stopped at exit. Usage: leaderless.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

# bg NAME CMD...: runs CMD in the background, its output in $work/NAME.out and, once it
# ends, its exit code in $work/NAME.rc (a finished child stays a zombie until waited
# for, so `kill -0` cannot tell that it ended). At most 60 s: the cleanup at exit kills
# the subshell, not CMD, so a failed run must not leave CMD behind for long.
bg() {
    local name=$1
    shift
    ( set +e; timeout 60 "$@" >"$work/$name.out" 2>&1; echo $? >"$work/$name.rc" ) &
    pids+=($!)
}

# printed NAME: what bg job NAME printed, without clientv3's JSON log lines.
printed() { grep -av '^{"level":' "$work/$1.out" || true; }

deadline_passed() {
    case "$1" in
        "Error: context deadline exceeded" | "Error: rpc error: code = Unknown desc = context deadline exceeded") return 0 ;;
        *) return 1 ;;
    esac
}

# leaderless SYSTEM PREFIX PORT_BASE: SYSTEM is etcd or keel; members PREFIX1..3 listen
# on PORT_BASE+{679,779,879} (clients) and +1 (peers).
leaderless() {
    local sys=$1 n=$2 b=$3
    local ic="${n}1=http://127.0.0.1:${b}680,${n}2=http://127.0.0.1:${b}780,${n}3=http://127.0.0.1:${b}880"
    for i in 1 2 3; do "start_$sys" "$n$i" "${b}$((5 + i))79" "${b}$((5 + i))80" "$ic"; done
    for i in 1 2 3; do wait_healthy "127.0.0.1:${b}$((5 + i))79" 20; done
    local E="etcdctl --endpoints=127.0.0.1:${b}679"
    $E put a 1 >/dev/null

    # An open watch on member 1, seen to deliver before the others go.
    bg "$sys.watch" $E watch a
    within 10 bash -c "$E put a w >/dev/null; grep -q '^w$' '$work/$sys.watch.out'" ||
        fail "$sys: the watch never delivered"

    local p2="pid_${n}2" p3="pid_${n}3"
    kill -9 "${!p2}" "${!p3}"
    within 15 bash -c "$E endpoint status 2>&1 | grep -q ', etcdserver: no leader\$'" ||
        fail "$sys: endpoint status never listed 'etcdserver: no leader': $($E endpoint status 2>&1)"
    ok "$sys: endpoint status lists 'etcdserver: no leader'"

    within 15 test -f "$work/$sys.watch.rc" || fail "$sys: the open watch never ended"
    local ended
    ended=$(printed "$sys.watch" | tail -2)
    [ "$ended" = $'watch was canceled (etcdserver: no leader)\nError: watch is canceled by the server' ] ||
        fail "$sys: the open watch ended with: $ended"
    ok "$sys: an open watch is canceled with 'etcdserver: no leader'"

    run timeout 10 $E watch a
    [ "$rc" -ne 0 ] && [ "$out" = $'watch was canceled (etcdserver: no leader)\nError: watch is canceled by the server' ] ||
        fail "$sys: a new watch gave rc=$rc: $out"
    ok "$sys: a new watch is refused with 'etcdserver: no leader'"

    # The deadline ends the call on both sides at once: etcdctl prints whichever end
    # noticed first (its own, or the server's answer to the expired grpc-timeout).
    run $E --command-timeout=1s put a x
    echo "$sys put: $out"
    [ "$rc" -ne 0 ] && deadline_passed "$out" || fail "$sys: put gave rc=$rc: $out"
    run $E --command-timeout=1s get a
    echo "$sys get: $out"
    [ "$rc" -ne 0 ] && deadline_passed "$out" || fail "$sys: get gave rc=$rc: $out"
    ok "$sys: put and linearizable get wait past the client's deadline"
    run $E get a --consistency=s
    [ "$rc" -eq 0 ] && [ "$out" = $'a\nw' ] || fail "$sys: serializable get gave rc=$rc: $out"
    ok "$sys: serializable get answers"
    local version
    version=$($E get a --consistency=s -w fields | sed -n 's/^"Version" : //p')

    # A put that waits while a peer comes back is applied, once.
    bg "$sys.put" $E --command-timeout=30s put a 2
    sleep 0.5
    [ ! -f "$work/$sys.put.rc" ] || fail "$sys: the put did not wait: $(printed "$sys.put")"
    "start_$sys" "${n}2" "${b}779" "${b}780" "$ic"
    within 30 test -f "$work/$sys.put.rc" || fail "$sys: the waiting put never ended"
    [ "$(cat "$work/$sys.put.rc")" = 0 ] && [ "$(printed "$sys.put")" = "OK" ] ||
        fail "$sys: the waiting put gave: $(printed "$sys.put")"
    run $E get a -w fields
    echo "$out" | matches "^\"Version\" : $((version + 1))\$" && echo "$out" | matches '^"Value" : "2"$' ||
        fail "$sys: after the waiting put (version was $version): $out"
    ok "$sys: a put waiting for a leader succeeds once a peer is back (applied once)"

    local p1="pid_${n}1" p2n="pid_${n}2"
    kill -9 "${!p1}" "${!p2n}" 2>/dev/null || true
}

[ "${ONLY:-}" = keel ] || leaderless etcd e 20
[ "${ONLY:-}" = etcd ] || leaderless keel k 21
echo "leaderless: $passed passed, 0 failed"
