#!/usr/bin/env bash
# --force-new-cluster, as etcdctl 3.4 sees it: the same checks against a 3-member etcd 3.4
# and a 3-member keel, one after the other. 100 keys are written (each acknowledged),
# every member is killed (kill -9) and two lose their data dirs for good; the survivor
# restarts with --force-new-cluster and:
# - serves all 100 keys to a linearizable get, lists one member, accepts a write;
# - says in its log that it forced a restart ("forcing restart ...");
# - accepts `etcdctl member add`, and the new member, started with
#   --initial-cluster-state existing, catches up (a serializable get on it);
# - restarted (with the new member) without the flag, is the same two-member cluster.
# Needs etcd, etcdctl (Debian etcd-server, etcd-client) and a release build of keel.
# Loopback only; every process is stopped at exit; about 15 s per system.
# Usage: force_new_cluster.sh [path/to/keel]   (ONLY=etcd or ONLY=keel runs one system)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

# count ENDPOINT [FLAGS...]: how many k/ keys a get at ENDPOINT counts (etcdctl 3.4 has
# no --count-only; its JSON answer has the count, which is absent when zero).
count() {
    local ep=$1
    shift
    etcdctl --endpoints="$ep" get k/ --prefix --keys-only -w json "$@" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'
}

# counts N ENDPOINT [FLAGS...]: whether a get at ENDPOINT counts N k/ keys.
counts() {
    local n=$1
    shift
    [ "$(count "$@" || true)" = "$n" ]
}

# force SYSTEM PREFIX BASE: SYSTEM is etcd or keel; member PREFIXi listens on
# BASE i 1 (clients) and BASE i 2 (peers), e.g. 25611 and 25612 for BASE 256, member 1.
force() {
    local sys=$1 n=$2 b=$3
    local ic="${n}1=http://127.0.0.1:${b}12,${n}2=http://127.0.0.1:${b}22,${n}3=http://127.0.0.1:${b}32"
    for i in 1 2 3; do "start_$sys" "$n$i" "${b}${i}1" "${b}${i}2" "$ic"; done
    for i in 1 2 3; do wait_healthy "127.0.0.1:${b}${i}1" 20; done
    local all="127.0.0.1:${b}11,127.0.0.1:${b}21,127.0.0.1:${b}31"
    for i in $(seq -w 1 100); do
        run etcdctl --endpoints="$all" put "k/$i" "v$i"
        [ "$rc" -eq 0 ] && [ "$out" = OK ] || fail "$sys: put k/$i gave rc=$rc: $out"
    done
    ok "$sys: 100 puts acknowledged by 3 members"
    # etcd's survivor keeps what its WAL says is committed and drops the rest of its log
    # ("discarding N uncommitted WAL entries"), so a write acknowledged just before the
    # crash is lost if its commit had not reached the survivor's WAL. etcd 3.4 writes a
    # follower's commit-only hard state to its WAL buffer without flushing it, so killed
    # right after the 100th put, it served 99 keys; and when the survivor had already
    # applied the put to its backend, it served 100 while a member added later got 99
    # (the entry was replaced by the forced removes). Keel keeps and commits every entry
    # of the survivor's WAL instead. So that etcd can pass too, one more put ("fence",
    # not checked) on every member's log makes each WAL carry a commit index past the
    # 100th put.
    run etcdctl --endpoints="$all" put fence x
    [ "$rc" -eq 0 ] || fail "$sys: put fence gave rc=$rc: $out"
    for i in 1 2 3; do
        within 10 bash -c "[ \"\$(etcdctl --endpoints=127.0.0.1:${b}${i}1 get fence --consistency=s --print-value-only 2>/dev/null)\" = x ]" ||
            fail "$sys: member $i never applied the fence"
    done

    local p1="pid_${n}1" p2="pid_${n}2" p3="pid_${n}3"
    kill -9 "${!p1}" "${!p2}" "${!p3}"
    wait "${!p1}" "${!p2}" "${!p3}" 2>/dev/null || true
    rm -rf "$work/${n}2" "$work/${n}3"

    "start_$sys" "${n}1" "${b}11" "${b}12" "$ic" --force-new-cluster
    wait_healthy "127.0.0.1:${b}11" 20
    local E="etcdctl --endpoints=127.0.0.1:${b}11"
    local c
    c=$(count "127.0.0.1:${b}11") || true
    [ "$c" = 100 ] || fail "$sys: a linearizable get after the forced restart counts '$c' keys"
    run $E get k/ --prefix --keys-only
    [ "$(echo "$out" | grep -c '^k/')" = 100 ] && [ "$(echo "$out" | grep '^k/' | tail -1)" = k/100 ] ||
        fail "$sys: the keys after the forced restart: $out"
    ok "$sys: the survivor serves all 100 keys to a linearizable get"
    run $E member list
    [ "$rc" -eq 0 ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | matches ", started, ${n}1, http://127.0.0.1:${b}12, " ||
        fail "$sys: member list after the forced restart gave rc=$rc: $out"
    ok "$sys: member list shows the survivor alone"
    grep -qi 'forcing restart' "$work/${n}1.log" || fail "$sys: no 'forcing restart' in the log"
    ok "$sys: the log says the restart was forced"
    run $E put after force
    [ "$rc" -eq 0 ] && [ "$out" = OK ] || fail "$sys: a put after the forced restart gave rc=$rc: $out"
    ok "$sys: a write succeeds with one member"

    # Grow again: member add, then the new member joins the running cluster.
    within 10 bash -c "$E member add ${n}4 --peer-urls=http://127.0.0.1:${b}42 >'$work/$sys.add' 2>&1" ||
        fail "$sys: member add: $(cat "$work/$sys.add")"
    local ic4
    ic4=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' "$work/$sys.add")
    echo "$ic4" | matches "^${n}1=http://127.0.0.1:${b}12,${n}4=http://127.0.0.1:${b}42\$" ||
        echo "$ic4" | matches "^${n}4=http://127.0.0.1:${b}42,${n}1=http://127.0.0.1:${b}12\$" ||
        fail "$sys: member add printed: $(cat "$work/$sys.add")"
    ok "$sys: member add accepted"
    "start_$sys" "${n}4" "${b}41" "${b}42" "$ic4" --initial-cluster-state existing
    wait_healthy "127.0.0.1:${b}41" 20
    local E4="etcdctl --endpoints=127.0.0.1:${b}41"
    within 15 counts 100 "127.0.0.1:${b}41" --consistency=s ||
        fail "$sys: the new member never served the 100 keys: $(count "127.0.0.1:${b}41" --consistency=s)"
    run $E4 get after --consistency=s --print-value-only
    [ "$out" = force ] || fail "$sys: the new member's 'after': $out"
    ok "$sys: the new member catches up (serializable get)"
    run $E member list
    [ "$(echo "$out" | grep -c ', started, ')" = 2 ] || fail "$sys: member list with the new member: $out"
    ok "$sys: member list shows two started members"

    # Both restart, the survivor without the flag: the same two-member cluster.
    local p4="pid_${n}4"
    kill "${!p1}" "${!p4}"
    wait "${!p1}" "${!p4}" 2>/dev/null || true
    "start_$sys" "${n}1" "${b}11" "${b}12" "$ic"
    "start_$sys" "${n}4" "${b}41" "${b}42" "$ic4" --initial-cluster-state existing
    wait_healthy "127.0.0.1:${b}11" 20
    wait_healthy "127.0.0.1:${b}41" 20
    run $E member list
    [ "$(echo "$out" | grep -c ', started, ')" = 2 ] || fail "$sys: member list after the restart: $out"
    c=$(count "127.0.0.1:${b}41") || true
    [ "$c" = 100 ] || fail "$sys: a linearizable get after the restart counts '$c' keys"
    run $E put again ok
    [ "$rc" -eq 0 ] && [ "$out" = OK ] || fail "$sys: a put after the restart gave rc=$rc: $out"
    ok "$sys: restarted without the flag: two members, every key, writable"
    kill -9 "${!p1}" "${!p4}" 2>/dev/null || true
    wait "${!p1}" "${!p4}" 2>/dev/null || true
}

[ "${ONLY:-}" = keel ] || force etcd e 256
[ "${ONLY:-}" = etcd ] || force keel k 257
echo "force_new_cluster: $passed passed, 0 failed"
