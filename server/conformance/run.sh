#!/usr/bin/env bash
# etcdctl conformance: the same etcdctl 3.4 session against a real etcd and a keel member
# side by side (outputs normalized for IDs, terms, timings and ports, then compared),
# then keel-only checks on a 3-member cluster: failover under a write loop, kill -9 of
# every member, a corrupted WAL record. Needs etcd, etcdctl (Debian etcd-server,
# etcd-client) and a release build of keel. Loopback only; every process is stopped at
# exit. Usage: run.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

normalize() { # endpoint
    sed -e "s#$1#EP#g" \
        -e 's/"cluster_id":[0-9]*/"cluster_id":C/g; s/"member_id":[0-9]*/"member_id":M/g' \
        -e 's/"raft_term":[0-9]*/"raft_term":T/g; s/"ID":[0-9]*/"ID":L/g; s/"id":[0-9]*/"id":L/g' \
        -e 's/"ts":"[^"]*"/"ts":TS/g; s/"target":"[^"]*"/"target":X/g' \
        -e 's/\b[0-9a-f]\{13,16\}\b/ID16/g; s/took = .*/took = T/; s/remaining([0-9]*s)/remaining(R)/' \
        -e 's/"caller":"[^"]*"/"caller":C/g'
}

echo "== side by side: etcd $(etcd --version | head -1 | awk '{print $3}') and keel"
# Both ways users write an endpoint: etcd's docs write the scheme, many scripts do not.
# Each spelling has servers of its own: a session leaves leases behind (etcdctl lock and
# elect keep their sessions' leases), which would show in the next session's listing.
for p in 22379 22479; do
    etcd --name default --data-dir "$work/etcd$p" \
        --listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
        --listen-peer-urls "http://127.0.0.1:$((p + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((p + 1))" \
        --initial-cluster "default=http://127.0.0.1:$((p + 1))" >"$work/etcd$p.log" 2>&1 &
    pids+=($!)
done
start_keel default 32379 32380 default=http://127.0.0.1:32380
start_keel schemed 32479 32480 schemed=http://127.0.0.1:32480
for p in 22379 22479 32379 32479; do wait_healthy "127.0.0.1:$p"; done
# side_by_side SCHEME ETCD_PORT KEEL_PORT: the session against both, compared.
side_by_side() {
    local scheme=$1 ep=$2 kp=$3
    "$here/suite.sh" "${scheme}127.0.0.1:$ep" 2>&1 | normalize "${scheme}127.0.0.1:$ep" >"$work/etcd.out"
    "$here/suite.sh" "${scheme}127.0.0.1:$kp" 2>&1 | normalize "${scheme}127.0.0.1:$kp" >"$work/keel.out"
    if ! diff -u "$work/etcd.out" "$work/keel.out"; then
        fail "keel's etcdctl session (endpoint ${scheme}127.0.0.1:PORT) differs from etcd's (diff above: - etcd, + keel)"
    fi
    ok "etcdctl session with endpoint ${scheme}127.0.0.1:PORT identical to etcd's ($(grep -c '^###' "$work/keel.out") steps, $(wc -l <"$work/keel.out") lines)"
}
side_by_side "" 22379 32379
side_by_side "http://" 22479 32479
eval "kill -TERM \$pid_schemed"

E="etcdctl --endpoints=127.0.0.1:32379"
$E member list -w table | matches "| started | default | http://127.0.0.1:32380 | http://127.0.0.1:32379 |" ||
    fail "member list -w table: $($E member list -w table)"
ok "member list -w table"
$E endpoint status -w table | matches -E "127.0.0.1:32379 \| [0-9a-f]+ \| +3\.4\.23 \|.*\| +true \| +false \|" ||
    fail "endpoint status -w table: $($E endpoint status -w table)"
ok "endpoint status -w table"
$E snapshot save "$work/snap.db" | matches "Snapshot saved at $work/snap.db" || fail "snapshot save"
size=$(stat -c %s "$work/snap.db")
[ $((size % 512)) -eq 32 ] || fail "snapshot size $size: not page-aligned data plus a SHA-256"
ok "snapshot save ($size bytes, trailing SHA-256 verified by size)"
python3 - "$work/snap.db" <<'PY' || fail "snapshot SHA-256 does not match its content"
import hashlib, sys
b = open(sys.argv[1], "rb").read()
assert hashlib.sha256(b[:-32]).digest() == b[-32:]
PY
ok "snapshot SHA-256 matches"
curl -fsS http://127.0.0.1:32379/health | matches '"health":"true"' || fail "/health"
curl -fsS http://127.0.0.1:32379/version | matches '"etcdserver"' || fail "/version"
curl -fsS http://127.0.0.1:32379/metrics >"$work/metrics"
grep -q '^etcd_server_has_leader 1' "$work/metrics" || fail "/metrics: has_leader"
grep -q 'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV"' "$work/metrics" ||
    fail "/metrics: gRPC requests by method and code"
grep -q 'grpc_code="OutOfRange",grpc_method="Range"' "$work/metrics" || fail "/metrics: error codes"
grep -q '^etcd_disk_wal_fsync_duration_seconds_count [1-9]' "$work/metrics" || fail "/metrics: fsync histogram"
ok "HTTP /health /version /metrics"
eval "kill -TERM \$pid_default"
for _ in $(seq 1 50); do kill -0 "$pid_default" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid_default" 2>/dev/null && fail "SIGTERM did not stop keel"
wait "$pid_default" && ok "SIGTERM: clean exit 0" || fail "SIGTERM: non-zero exit"

# systemd Type=notify: READY=1 arrives on NOTIFY_SOCKET once the member serves.
python3 - "$work/notify.sock" >"$work/notify.out" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(20)
print(s.recv(256).decode())
PY
listener=$!
pids+=($listener)
for _ in $(seq 1 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$work/notify.sock" start_keel notified 31679 31680 notified=http://127.0.0.1:31680
wait "$listener" || fail "no READY=1 on NOTIFY_SOCKET"
grep -qx "READY=1" "$work/notify.out" || fail "NOTIFY_SOCKET got: $(cat "$work/notify.out")"
eval "kill -TERM \$pid_notified"
eval "wait \$pid_notified" || true
ok "systemd notify: READY=1 on NOTIFY_SOCKET"

echo "== 3-member keel cluster"
IC="k1=http://127.0.0.1:31380,k2=http://127.0.0.1:31480,k3=http://127.0.0.1:31580"
EPS="127.0.0.1:31379,127.0.0.1:31479,127.0.0.1:31579"
start_keel k1 31379 31380 "$IC"
start_keel k2 31479 31480 "$IC"
start_keel k3 31579 31580 "$IC"
for p in 31379 31479 31579; do wait_healthy 127.0.0.1:$p; done
[ "$(etcdctl --endpoints=$EPS member list | wc -l)" = 3 ] || fail "member list of 3"
ok "3 members up"
E3="etcdctl --endpoints=$EPS"
$E3 put shared value >/dev/null
for p in 31379 31479 31579; do
    [ "$(etcdctl --endpoints=127.0.0.1:$p get shared --print-value-only)" = value ] || fail "read on $p"
done
ok "write via one member, linearizable read on every member"

leader_port() { # [endpoints]
    etcdctl --endpoints="${1:-$EPS}" --command-timeout=1s endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    st = s["Status"]
    if st["header"]["member_id"] == st["leader"]:
        print(s["Endpoint"].rsplit(":", 1)[1])'
}
port_name() { case $1 in 31379) echo k1 ;; 31479) echo k2 ;; 31579) echo k3 ;; esac; }

follower_port() {
    for p in 31379 31479 31579; do
        [ "$p" != "$(leader_port)" ] && { echo "$p"; return; }
    done
}
fp=$(follower_port)
EF="etcdctl --endpoints=127.0.0.1:$fp"
lid=$($EF lease grant 30 | awk '{print $2}')
$EF lease keep-alive --once "$lid" | matches "keepalived with TTL(30)" || fail "keep-alive via a follower"
$EF lease timetolive "$lid" | matches -E "granted with TTL\(30s\), remaining\((29|30)s\)" ||
    fail "timetolive via a follower: $($EF lease timetolive "$lid")"
$EF lease revoke "$lid" | matches revoked || fail "revoke via a follower"
ok "leases through a follower (keepalive and TTL answered by the leader)"

lp=$(leader_port)
[ -n "$lp" ] || fail "no leader"
target=$(etcdctl --endpoints=$EPS endpoint status -w json | python3 -c '
import json, sys
ss = json.load(sys.stdin)
print([format(s["Status"]["header"]["member_id"], "x") for s in ss if s["Status"]["header"]["member_id"] != s["Status"]["leader"]][0])')
etcdctl --endpoints=127.0.0.1:$lp move-leader "$target" | matches "Leadership transferred" || fail "move-leader"
ok "move-leader to $target"

# A client writes in a loop while the leader is killed; every acknowledged write must
# survive and a new leader must appear within two election timeouts (+ detection slack).
acked="$work/acked"
: >"$acked"
( i=0; while [ $i -lt 100000 ]; do
    if etcdctl --endpoints=$EPS --command-timeout=2s put "loop/$i" "$i" >/dev/null 2>&1; then echo "$i" >>"$acked"; fi
    i=$((i + 1))
  done ) &
writer=$!
pids+=($writer)
sleep 2
lp=$(leader_port)
old=$(port_name "$lp")
survivors=$(echo "$EPS" | tr , '\n' | grep -v ":$lp\$" | paste -sd,)
eval "kill -9 \$pid_$old"
killed_at=$(date +%s%N)
while :; do
    np=$(leader_port "$survivors" || true)
    if [ -n "$np" ] && [ "$np" != "$lp" ]; then break; fi
    [ $(( ($(date +%s%N) - killed_at) / 1000000 )) -lt 10000 ] || fail "no new leader 10 s after killing $old"
    sleep 0.05
done
elected_ms=$(( ($(date +%s%N) - killed_at) / 1000000 ))
# Two election timeouts (1 s), plus 500 ms for the etcdctl polling that observes it.
[ "$elected_ms" -le 1500 ] || fail "new leader only after $elected_ms ms"
ok "kill -9 leader $old: new leader after ${elected_ms} ms (election timeout 500 ms)"
sleep 2
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
n=$(wc -l <"$acked")
[ "$n" -gt 10 ] || fail "only $n writes acknowledged"
start_keel "$old" "$lp" "$(( lp + 1 ))" "$IC"
wait_healthy "127.0.0.1:$lp"

check_acked() {
    etcdctl --endpoints=$EPS get loop/ --prefix --keys-only | grep -v '^$' | sed 's#loop/##' | LC_ALL=C sort >"$work/present"
    missing=$(comm -23 <(LC_ALL=C sort -u "$acked") "$work/present" | head -5)
    [ -z "$missing" ] || fail "acknowledged writes lost: $missing"
}
check_acked
ok "all $n acknowledged writes present after failover"

for m in k1 k2 k3; do eval "kill -9 \$pid_$m" 2>/dev/null || true; done
sleep 0.5
start_keel k1 31379 31380 "$IC"
start_keel k2 31479 31480 "$IC"
start_keel k3 31579 31580 "$IC"
for p in 31379 31479 31579; do wait_healthy 127.0.0.1:$p; done
check_acked
ok "kill -9 of every member and restart: all $n acknowledged writes present"

for m in k1 k2 k3; do eval "kill -TERM \$pid_$m"; done
for m in k1 k2 k3; do eval "wait \$pid_$m" || true; done
seg=$(ls "$work/k2/member/wal/" | sort | head -1)
python3 - "$work/k2/member/wal/$seg" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
# Flip a byte inside the payload of an early record (past the segment header and the
# first frames): a CRC mismatch that is not a torn tail.
b[300] ^= 0xFF
open(p, "wb").write(b)
PY
set +e
out=$("$KEEL" --name k2 --data-dir "$work/k2" --listen-client-urls http://127.0.0.1:31479 \
    --advertise-client-urls http://127.0.0.1:31479 --listen-peer-urls http://127.0.0.1:31480 \
    --initial-advertise-peer-urls http://127.0.0.1:31480 --initial-cluster "$IC" 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "keel started on a corrupted WAL"
echo "$out" | tail -1 | matches "$seg" || fail "the error does not name the segment $seg: $(echo "$out" | tail -1)"
ok "corrupted WAL record: refuses to start, naming the file ($(echo "$out" | tail -1 | cut -c1-120))"

echo "$passed passed, 0 failed"
