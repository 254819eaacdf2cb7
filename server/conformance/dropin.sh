#!/usr/bin/env bash
# etcdctl as etcd's docs and deployment guides write it: endpoints spelled
# `http://host:port` / `https://host:port`, on 3-member clusters of a real etcd 3.4 and of
# keel side by side. Compared with etcd, after normalizing IDs, terms, sizes and ports:
# the per-endpoint commands (endpoint status/hashkv, defrag, alarm list, move-leader,
# snapshot save), every response header etcdctl shows with -w json, the compaction
# boundary (reads, txn reads and watches at compact-1, compact, compact+1), /version,
# /health with and without an alarm, `--version`'s first line. Keel-only: the milestone
# log lines harnesses wait for (both log formats), `--experimental-initial-corrupt-check`,
# a TLS cluster with https endpoints where member removal and lease calls go through a
# follower (with client certificates, and with auth on), no "Illegal SNI" noise, and a
# self-signed CA certificate used as every certificate. Needs etcd, etcdctl, openssl,
# curl, python3 and a release build of keel. Loopback only; every process is stopped at
# exit. Usage: dropin.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

# The shape of JSON: every key path with its value's type, values themselves dropped,
# so that which header fields are set is compared, not what they hold.
shape() {
    python3 -c '
import json, sys
def walk(v, path, out):
    if isinstance(v, dict):
        for k in sorted(v):
            walk(v[k], path + "." + k, out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(x, path + "[" + str(i) + "]", out)
    else:
        out.append(path + ": " + type(v).__name__)
for line in sys.stdin:
    line = line.strip()
    if not line.startswith(("{", "[")):
        continue
    out = []
    walk(json.loads(line), "", out)
    print("\n".join(out))
'
}

normalize() { # ports...
    local args=()
    for p in "$@"; do args+=(-e "s#127.0.0.1:$p#EP#g"); done
    sed "${args[@]}" \
        -e 's/\b[0-9a-f]\{16\}\b/ID16/g; s/\b[0-9a-f]\{14,15\}\b/ID16/g' \
        -e 's/"raft_term":[0-9]*/"raft_term":T/g; s/"cluster_id":[0-9]*/"cluster_id":C/g' \
        -e 's/"member_id":[0-9]*/"member_id":M/g; s/took = .*/took = T/'
}

EIC="e1=http://127.0.0.1:26480,e2=http://127.0.0.1:26580,e3=http://127.0.0.1:26680"
KIC="k1=http://127.0.0.1:27480,k2=http://127.0.0.1:27580,k3=http://127.0.0.1:27680"
start_etcd e1 26479 26480 "$EIC" --experimental-initial-corrupt-check
start_etcd e2 26579 26580 "$EIC" --experimental-initial-corrupt-check
start_etcd e3 26679 26680 "$EIC" --experimental-initial-corrupt-check
# As etcd's e2e harness starts every member.
start_keel k1 27479 27480 "$KIC" --experimental-initial-corrupt-check
start_keel k2 27579 27580 "$KIC" --experimental-initial-corrupt-check
start_keel k3 27679 27680 "$KIC" --experimental-initial-corrupt-check --logger zap
for p in 26479 26579 26679 27479 27579 27679; do wait_healthy "http://127.0.0.1:$p"; done
ok "3-member etcd and keel up (keel with --experimental-initial-corrupt-check)"

# The milestones etcd's e2e harness and pifpaf wait for, in the readable and zap formats.
for m in k1 k3; do
    for line in "published" "enabled capabilities for version 3.4" "ready to serve client requests"; do
        grep -q "$line" "$work/$m.log" || fail "$m's log lacks \"$line\""
    done
done
grep -q '^{.*"message":"published local member to cluster through raft"' "$work/k3.log" ||
    fail "zap log: no JSON 'published' line: $(grep published "$work/k3.log")"
ok "milestone log lines: published, enabled capabilities for version 3.4, ready to serve client requests"
# As etcd, only a member restarting from its data dir compares hashes with its peers.
if grep -q 'starting initial corruption check' "$work/k1.log"; then
    fail "a new member ran the initial corruption check"
fi

# session SERVER-PORTS...: the same etcdctl commands with http:// endpoints.
session() {
    local p1=$1 p2=$2 p3=$3
    local EPS="http://127.0.0.1:$p1,http://127.0.0.1:$p2,http://127.0.0.1:$p3"
    local E="etcdctl --endpoints=$EPS"
    set +e
    echo "### endpoint status"; $E endpoint status -w json | shape; $E endpoint status | wc -l
    echo "### endpoint hashkv"; $E endpoint hashkv -w json | shape; $E endpoint hashkv | wc -l
    echo "### defrag"; $E defrag
    echo "### alarm list"; $E alarm list -w json; $E alarm list
    echo "### member list"; $E member list -w json | shape
    echo "### snapshot save"; etcdctl --endpoints="http://127.0.0.1:$p1" snapshot save "$work/snap.db" 2>&1 | grep -v '^{"level"' | sed "s#$work#W#"
    echo "### move-leader"
    local leader target
    leader=$($E endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["Status"]["header"]["member_id"] == s["Status"]["leader"]:
        print(s["Endpoint"])')
    target=$($E endpoint status -w json | python3 -c '
import json, sys
print([format(s["Status"]["header"]["member_id"], "x") for s in json.load(sys.stdin)
       if s["Status"]["header"]["member_id"] != s["Status"]["leader"]][0])')
    etcdctl --endpoints="$leader" move-leader "$target"
    echo "### move-leader via a follower"; etcdctl --endpoints="$leader" move-leader "$target" 2>&1 | tail -1
    echo "### compaction boundary"
    for i in 1 2 3 4 5 6; do $E put key "v$i" >/dev/null; done
    local base c
    base=$($E get key -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
    c=$((base - 3))
    echo "compact at base-3"; $E compaction "$c" | sed "s/$c/C/"
    for r in $((c - 1)) "$c" $((c + 1)); do
        echo "-- get --rev $((r - c)) from C"; $E get key --rev "$r" -w json | normalize | sed 's/"revision":[0-9]*/"revision":R/g; s/"\(create\|mod\)_revision":[0-9]*/"\1_revision":R/g'
        echo "-- txn get --rev $((r - c)) from C"; printf '\n\nget key --rev=%s\n\n' "$r" | $E txn 2>&1
        echo "-- watch --rev $((r - c)) from C"; timeout 2 $E watch key --rev "$r" -w json | normalize |
            sed 's/"revision":[0-9]*/"revision":R/g; s/"\(create\|mod\)_revision":[0-9]*/"\1_revision":R/g; s/"compact_revision":[0-9]*/"compact_revision":C/g'
        echo "-- watch --rev $((r - c)) from C, text"; timeout 2 $E watch key --rev "$r"
    done
    set -e
}
# Without the client library's JSON log lines (timestamps, random client IDs).
session 26479 26579 26679 2>&1 | grep -av '^{"level":' | normalize 26479 26579 26679 >"$work/etcd.session"
session 27479 27579 27679 2>&1 | grep -av '^{"level":' | normalize 27479 27579 27679 >"$work/keel.session"
if ! diff -u "$work/etcd.session" "$work/keel.session"; then
    fail "keel's session with http:// endpoints differs from etcd's (diff above: - etcd, + keel)"
fi
grep -q 'Finished defragmenting etcd member\[http://EP\]' "$work/keel.session" || fail "defrag did not run: $(cat "$work/keel.session")"
grep -q 'Leadership transferred' "$work/keel.session" || fail "move-leader did not run"
grep -q 'Snapshot saved at' "$work/keel.session" || fail "snapshot save did not run: $(grep -A3 '### snapshot' "$work/keel.session")"
ok "http:// endpoints: endpoint status/hashkv (3 rows), defrag, alarm list, member list, snapshot save, move-leader, compaction boundary identical to etcd's ($(wc -l <"$work/keel.session") lines)"

[ "$(curl -fsS http://127.0.0.1:27479/version)" = "$(curl -fsS http://127.0.0.1:26479/version)" ] ||
    fail "/version: keel $(curl -sS http://127.0.0.1:27479/version), etcd $(curl -sS http://127.0.0.1:26479/version)"
[ "$("$KEEL" --version | head -1)" = "$(etcd --version | head -1)" ] || fail "--version: $("$KEEL" --version | head -1)"
ok "/version and --version's first line as etcd 3.4.23's"

# /health with and without an alarm, one member of each with a small quota.
start_etcd eq 30479 30480 eq=http://127.0.0.1:30480 --quota-backend-bytes 1048576
start_keel kq 30579 30580 kq=http://127.0.0.1:30580 --quota-backend-bytes 1048576
wait_healthy http://127.0.0.1:30479
wait_healthy http://127.0.0.1:30579
health() { # port query
    curl -sS -o "$work/health" -w '%{http_code}' "http://127.0.0.1:$1/health$2"
    echo " $(cat "$work/health")"
}
fill() { # port: writes until the quota's alarm refuses one
    python3 - "$1" <<'PY'
import subprocess, sys
v = "x" * 60000
for i in range(200):
    r = subprocess.run(["etcdctl", "--endpoints=http://127.0.0.1:" + sys.argv[1], "put", "big%d" % i, v],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr.strip().splitlines()[-1])
        break
PY
}
quota() { # port
    local E="etcdctl --endpoints=http://127.0.0.1:$1"
    echo "### healthy"; health "$1" ""
    echo "### fill"; fill "$1"
    echo "### alarm list"; $E alarm list | sed 's/memberID:[0-9]*/memberID:M/'
    echo "### health"; health "$1" ""; health "$1" "?exclude=NOSPACE"
    echo "### disarm"; $E alarm disarm | sed 's/memberID:[0-9]*/memberID:M/'; health "$1" ""
}
quota 30479 >"$work/etcd.quota" 2>&1
quota 30579 >"$work/keel.quota" 2>&1
diff -u "$work/etcd.quota" "$work/keel.quota" || fail "/health and alarms differ from etcd's (- etcd, + keel)"
grep -q '503 {"health":"false"}' "$work/keel.quota" || fail "no unhealthy answer under the alarm: $(cat "$work/keel.quota")"
ok "/health, alarm list and disarm under a NOSPACE alarm identical to etcd's"

echo "== TLS, https endpoints, calls through a follower"
ca ca
cert ca server "IP:127.0.0.1,DNS:localhost"
cert ca client "DNS:client"
cert ca root "DNS:root"
TLS=(--cert-file "$pki/server.crt" --key-file "$pki/server.key" --trusted-ca-file "$pki/ca.crt" --client-cert-auth
    --peer-cert-file "$pki/server.crt" --peer-key-file "$pki/server.key" --peer-trusted-ca-file "$pki/ca.crt"
    --peer-client-cert-auth)
TIC="t1=https://127.0.0.1:28480,t2=https://127.0.0.1:28580,t3=https://127.0.0.1:28680"
start_keel_tls t1 28479 28480 "$TIC" "${TLS[@]}"
start_keel_tls t2 28579 28580 "$TIC" "${TLS[@]}"
start_keel_tls t3 28679 28680 "$TIC" "${TLS[@]}"
T="etcdctl --cacert $pki/ca.crt --cert $pki/client.crt --key $pki/client.key"
TEPS="https://127.0.0.1:28479,https://127.0.0.1:28579,https://127.0.0.1:28679"
for _ in $(seq 1 100); do $T --endpoints=$TEPS endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
[ "$($T --endpoints=$TEPS endpoint status | grep -c '^https://127.0.0.1:28[456]79, [0-9a-f]*, 3.4.23, ')" = 3 ] ||
    fail "endpoint status over https: $($T --endpoints=$TEPS endpoint status 2>&1)"
[ "$($T --endpoints=$TEPS endpoint hashkv | grep -c '^https://127.0.0.1:28[456]79, [0-9]*$')" = 3 ] ||
    fail "endpoint hashkv over https: $($T --endpoints=$TEPS endpoint hashkv 2>&1)"
[ "$($T --endpoints=$TEPS defrag | grep -c 'Finished defragmenting etcd member\[https://')" = 3 ] || fail "defrag over https"
$T --endpoints=$TEPS alarm list >/dev/null || fail "alarm list over https"
$T --endpoints=https://127.0.0.1:28479 snapshot save "$work/tls.db" 2>&1 | matches "Snapshot saved at" || fail "snapshot save over https"
tleader() {
    $T --endpoints=$TEPS endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    st = s["Status"]
    print(s["Endpoint"], format(st["header"]["member_id"], "x"), st["header"]["member_id"] == st["leader"])'
}
lead=$(tleader | awk '$3 == "True" {print $1}')
tgt=$(tleader | awk '$3 == "False" {print $2}' | head -1)
$T --endpoints="$lead" move-leader "$tgt" | matches "Leadership transferred" || fail "move-leader over https"
ok "https endpoints: endpoint status/hashkv (3 rows), defrag, alarm list, snapshot save, move-leader"

fol=$(tleader | awk '$3 == "False" {print $1}' | head -1)
lid=$($T --endpoints="$fol" lease grant 30 | awk '{print $2}')
$T --endpoints="$fol" lease keep-alive --once "$lid" | matches "keepalived with TTL(30)" || fail "keepalive via a TLS follower"
# A keepalive stream renews every TTL/3 through the follower, on one kept connection.
lid3=$($T --endpoints="$fol" lease grant 3 | awk '{print $2}')
n=$( (timeout 3.5 $T --endpoints="$fol" lease keep-alive "$lid3" 2>/dev/null || true) | grep -c "keepalived with TTL(3)")
[ "$n" -ge 3 ] || fail "a keepalive stream through a TLS follower renewed $n times in 3.5 s"
$T --endpoints="$fol" lease timetolive "$lid" | matches "granted with TTL(30s)" || fail "timetolive via a TLS follower: $($T --endpoints="$fol" lease timetolive "$lid" 2>&1)"
added=$($T --endpoints="$fol" member add spare --learner --peer-urls=https://127.0.0.1:28780 2>&1) ||
    fail "member add via a TLS follower: $added"
spare=$(echo "$added" | sed -n 's/^Member *\([0-9a-f]*\) added.*/\1/p')
$T --endpoints="$fol" member remove "$spare" | matches "Member *$spare removed" ||
    fail "member remove via a TLS follower: $($T --endpoints="$fol" member remove "$spare" 2>&1)"
ok "through a follower over TLS with client certificates: lease keep-alive and timetolive, member add and remove"

# With auth on, the same through a follower, as root and as a user without the right.
$T --endpoints=$TEPS user add root:rootpw >/dev/null
$T --endpoints=$TEPS user add alice:alicepw >/dev/null
$T --endpoints=$TEPS auth enable >/dev/null 2>&1
R="$T --user root:rootpw"
fol=$(tleader | awk '$3 == "False" {print $1}' | head -1)
added=$($R --endpoints="$fol" member add spare2 --learner --peer-urls=https://127.0.0.1:28880 2>&1) ||
    fail "member add via a follower with auth: $added"
spare=$(echo "$added" | sed -n 's/^Member *\([0-9a-f]*\) added.*/\1/p')
run $T --user alice:alicepw --endpoints="$fol" member remove "$spare"
[ "$rc" != 0 ] && echo "$out" | matches "permission denied" || fail "a non-root user removed a member: $out"
$R --endpoints="$fol" member remove "$spare" | matches "Member *$spare removed" ||
    fail "member remove via a follower with auth: $($R --endpoints="$fol" member remove "$spare" 2>&1)"
ok "with auth on, through a follower: member add and remove as root; refused for another user"
# OpenSSL-based clients send the IP address they dial as SNI, which the standard forbids.
echo | timeout 5 openssl s_client -connect 127.0.0.1:28479 -servername 127.0.0.1 -CAfile "$pki/ca.crt" \
    -cert "$pki/client.crt" -key "$pki/client.key" >/dev/null 2>&1 || true
if grep -h 'Illegal SNI' "$work"/t[123].log; then fail "TLS clients dialing an IP address were logged as errors"; fi
ok "no 'Illegal SNI' noise from clients dialing IP addresses"

echo "== a self-signed CA certificate as every certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=selfca" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$pki/self.key" -out "$pki/self.crt" 2>/dev/null
openssl x509 -in "$pki/self.crt" -noout -text | matches "CA:TRUE" || fail "the certificate is not a CA's"
SELF=(--cert-file "$pki/self.crt" --key-file "$pki/self.key" --trusted-ca-file "$pki/self.crt" --client-cert-auth
    --peer-cert-file "$pki/self.crt" --peer-key-file "$pki/self.key" --peer-trusted-ca-file "$pki/self.crt"
    --peer-client-cert-auth)
SIC="s1=https://127.0.0.1:29480,s2=https://127.0.0.1:29580,s3=https://127.0.0.1:29680"
start_keel_tls s1 29479 29480 "$SIC" "${SELF[@]}"
start_keel_tls s2 29579 29580 "$SIC" "${SELF[@]}"
start_keel_tls s3 29679 29680 "$SIC" "${SELF[@]}"
S="etcdctl --cacert $pki/self.crt --cert $pki/self.crt --key $pki/self.key --endpoints=https://127.0.0.1:29479,https://127.0.0.1:29579,https://127.0.0.1:29679"
for _ in $(seq 1 100); do $S endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
$S put self v | matches -x OK || fail "put with a CA certificate as client and server certificate: $($S put self v 2>&1)"
[ "$($S member list | grep -c started)" = 3 ] || fail "peers with a CA certificate did not connect"
ok "a self-signed CA certificate as server, client and peer certificate (3 members, etcdctl)"

echo "$passed passed, 0 failed"
