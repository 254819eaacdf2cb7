#!/usr/bin/env bash
# A leader on a slow disk, on keel's real binary: three members on loopback, each under
# an LD_PRELOAD shim (slow_disk/slow_sync.c) that can delay its fdatasync/fsync. Once a
# leader is elected, every sync of the leader's disk takes 3 s (three election timeouts
# of --election-timeout 1000) for 12 s while the followers' disks stay fast. Required:
# no election (the leader and the raft term stay the same on every member), writes
# through a follower keep succeeding, and once the disk recovers every member reaches
# the same revision. Then a disk that fails (syncs return EIO through the same shim's
# KEEL_FAIL_SYNC_FILE) stops the member, as etcd does, without acknowledging anything.
# Ports 6200-6299. Usage: slow_disk.sh path/to/keel
set -euo pipefail
KEEL=$(realpath "$1")
here="$(cd "$(dirname "$0")" && pwd)"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for i in 1 2 3; do echo "--- m$i log (tail)"; tail -20 "$work/m$i.log" >&2 || true; done; exit 1; }

gcc -shared -fPIC -O2 -o "$work/slow_sync.so" "$here/slow_disk/slow_sync.c" -ldl

ic="m1=http://127.0.0.1:6211,m2=http://127.0.0.1:6212,m3=http://127.0.0.1:6213"
for i in 1 2 3; do
    echo 0 >"$work/delay$i"
    echo 0 >"$work/fail$i"
    KEEL_SLOW_SYNC_FILE="$work/delay$i" KEEL_FAIL_SYNC_FILE="$work/fail$i" LD_PRELOAD="$work/slow_sync.so" \
        "$KEEL" --name "m$i" --data-dir "$work/m$i" --heartbeat-interval 100 --election-timeout 1000 \
        --listen-client-urls "http://127.0.0.1:620$i" --advertise-client-urls "http://127.0.0.1:620$i" \
        --listen-peer-urls "http://127.0.0.1:621$i" --initial-advertise-peer-urls "http://127.0.0.1:621$i" \
        --initial-cluster "$ic" >"$work/m$i.log" 2>&1 &
    pids+=($!)
done
eps="http://127.0.0.1:6201,http://127.0.0.1:6202,http://127.0.0.1:6203"
for _ in $(seq 1 100); do
    etcdctl --endpoints "$eps" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
etcdctl --endpoints "$eps" put warm up >/dev/null || fail "no cluster"

# status I: "leader term" as member I sees them.
status() {
    etcdctl --endpoints "http://127.0.0.1:620$1" endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["leader"], s["raftTerm"])'
}
read -r leader term < <(status 1)
L=0
for i in 1 2 3; do
    id=$(etcdctl --endpoints "http://127.0.0.1:620$i" endpoint status -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["member_id"])')
    [ "$id" = "$leader" ] && L=$i
done
[ "$L" != 0 ] || fail "leader $leader not found"
F=$((L % 3 + 1))
echo "leader m$L (term $term); its syncs now take 3000 ms; writing through m$F for 12 s"
echo 3000 >"$work/delay$L"
ok=0
n=0
end=$((SECONDS + 12))
while [ $SECONDS -lt $end ]; do
    n=$((n + 1))
    if etcdctl --endpoints "http://127.0.0.1:620$F" --command-timeout 5s put "k$((n % 8))" "v$n" >/dev/null 2>&1; then
        ok=$((ok + 1))
    fi
done
for i in 1 2 3; do
    read -r l t < <(status "$i") || fail "m$i did not answer status during the stall"
    [ "$l" = "$leader" ] && [ "$t" = "$term" ] || fail "m$i: leader $l term $t after the stall (was $leader, term $term): an election happened"
done
echo "no election; $ok of $n writes through a follower succeeded during the stall"
[ "$ok" -ge $((n / 2)) ] || fail "only $ok of $n writes succeeded during the stall"
grep -q "slow fdatasync" "$work/m$L.log" || fail "the leader did not log its slow fdatasync"
echo 0 >"$work/delay$L"
# Every member reaches the same revision once the disk recovers.
for _ in $(seq 1 100); do
    revs=$(for i in 1 2 3; do etcdctl --endpoints "http://127.0.0.1:620$i" get k0 -w json --consistency s |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'; done | sort -u | wc -l)
    [ "$revs" = 1 ] && break
    sleep 0.1
done
[ "$revs" = 1 ] || fail "members disagree on the revision after the disk recovered"
echo "leader m$L kept term $term through 12 s of 3 s syncs"

# A follower whose syncs fail (EIO) stops, as etcd's member does; the other two go on.
echo 1 >"$work/fail$F"
etcdctl --endpoints "http://127.0.0.1:620$L" put after-eio v >/dev/null || fail "put with one failing follower"
pid=${pids[$((F - 1))]}
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then fail "m$F kept running after its fdatasync failed"; fi
grep -qi "input/output error" "$work/m$F.log" || fail "m$F did not name the I/O error"
echo "m$F stopped on EIO: $(grep -m1 -i "input/output error" "$work/m$F.log" | cut -c1-160)"
# It never acknowledged what it could not sync: restarted on a healthy disk, it catches up.
echo 0 >"$work/fail$F"
KEEL_SLOW_SYNC_FILE="$work/delay$F" KEEL_FAIL_SYNC_FILE="$work/fail$F" LD_PRELOAD="$work/slow_sync.so" \
    "$KEEL" --name "m$F" --data-dir "$work/m$F" --heartbeat-interval 100 --election-timeout 1000 \
    --listen-client-urls "http://127.0.0.1:620$F" --advertise-client-urls "http://127.0.0.1:620$F" \
    --listen-peer-urls "http://127.0.0.1:621$F" --initial-advertise-peer-urls "http://127.0.0.1:621$F" \
    --initial-cluster "$ic" >>"$work/m$F.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    v=$(etcdctl --endpoints "http://127.0.0.1:620$F" get after-eio --print-value-only --consistency s 2>/dev/null || true)
    [ "$v" = v ] && break
    sleep 0.1
done
[ "$v" = v ] || fail "m$F did not restart and catch up after the EIO"
echo "PASS slow_disk"
