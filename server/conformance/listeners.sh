#!/usr/bin/env bash
# etcd's other listeners, keel and a real etcd 3.4.23 side by side with identical etcdctl
# output required (member IDs, times and ports normalized):
#  - unix sockets: 3-member clusters whose client and peer URLs are all `unix://host:port`
#    (the socket file is `host:port` in the working directory); etcdctl v3 through the
#    endpoint spellings etcd accepts (`unix://localhost:P`, `unix:///abs/path`,
#    `unix://./rel`) and refuses (`unix:localhost:P`), /version and /health over the
#    socket, a `unix:///path` listen URL refused, a stale client socket file refused with
#    etcd's error, socket files removed at exit;
#  - the v2 members API under --enable-v2, through the unix sockets: ETCDCTL_API=2
#    cluster-health, member list/add/update/remove, /v2/members/leader, /v2/machines;
#  - http:// and https:// (and unix:// and unixs://) on the same socket: etcdctl and curl
#    over each scheme;
#  - `gateway start` (etcd's L4 gateway): etcdctl through keel's gateway to keel and to
#    etcd and through etcd's gateway to keel, a dead endpoint skipped; help and errors.
# (etcd 3.4.23 times out on plaintext gRPC on a shared socket: keel serving it is checked
# alone.) Needs etcd, etcdctl, curl, openssl and a release build of keel. Every process is
# stopped at exit. Ports 4100-4199. Usage: listeners.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="$(realpath "${1:-$here/../../target/release/keel}")"
source "$here/lib.sh"

normalize() {
    sed -e 's/\b[0-9a-f]\{14,16\}\b/ID/g' -e 's/took = .*/took = T/' \
        -e 's/isLeader=[a-z]*/isLeader=L/' -e "s#$work/[ek]#W#g" -e 's/"ts":"[^"]*"//'
}

# unix_cluster DIR BINARY: three members whose every URL is a unix socket in DIR, where
# they run; logs in DIR/mN.log.
unix_cluster() {
    local dir=$1 bin=$2 i
    local ic="m1=unix://localhost:4112,m2=unix://localhost:4122,m3=unix://localhost:4132"
    mkdir -p "$dir"
    for i in 1 2 3; do
        (cd "$dir" && exec "$bin" --name "m$i" --data-dir "m$i" --enable-v2 \
            --listen-client-urls "unix://localhost:41${i}1" --advertise-client-urls "unix://localhost:41${i}1" \
            --listen-peer-urls "unix://localhost:41${i}2" --initial-advertise-peer-urls "unix://localhost:41${i}2" \
            --initial-cluster "$ic" --heartbeat-interval 50 --election-timeout 500 >>"m$i.log" 2>&1) &
        pids+=($!)
    done
}
in_dir() { (cd "$1" && shift && "$@"); }

unix_cluster "$work/e" etcd
unix_cluster "$work/k" "$KEEL"
for d in e k; do
    for i in 1 2 3; do
        in_dir "$work/$d" within 15 etcdctl --endpoints "unix://localhost:41${i}1" --dial-timeout=1s \
            --command-timeout=1s endpoint health >/dev/null 2>&1 || fail "$d: unix://localhost:41${i}1 never became healthy"
    done
done
ok "3-member etcd and keel clusters up on unix client and peer sockets"

# unix_session DIR: etcdctl and curl over the unix sockets, from DIR.
unix_session() {
    cd "$1"
    local E="etcdctl --endpoints unix://localhost:4111"
    set +e
    echo "### put/get"; $E put k v; $E get k
    echo "### member list"; $E member list; $E member list -w json | sed 's/"raft_term":[0-9]*//; s/[0-9]\{15,20\}/N/g'
    echo "### endpoint health"; etcdctl --endpoints unix://localhost:4111,unix://localhost:4121 endpoint health 2>&1 | sort
    echo "### endpoint status"; $E endpoint status | cut -d, -f1,3,6
    echo "### spellings"
    for ep in "unix://$1/localhost:4121" unix://./localhost:4131; do
        etcdctl --endpoints "$ep" get k
    done
    etcdctl --endpoints unix:localhost:4111 --dial-timeout=1s --command-timeout=1s get k 2>&1 | grep -v '^{"level"'
    echo "rc=$?"
    echo "### curl"; curl -sS --unix-socket localhost:4121 http://localhost/version; echo
    curl -sS --unix-socket localhost:4121 http://localhost/health; echo
    echo "### v2 cluster-health"; ETCDCTL_API=2 $E cluster-health; echo "rc=$?"
    echo "### v2 member list"; ETCDCTL_API=2 $E member list
    echo "### v2 machines"; curl -sS --unix-socket localhost:4121 http://localhost/v2/machines; echo
    echo "### v2 members/leader"; curl -sS --unix-socket localhost:4121 http://localhost/v2/members/leader | sed 's/"name":"m[123]"/"name":N/; s/41[123]/41X/g'
    echo "### v2 members"
    # Header names compared case-insensitively and in Go's (sorted) order.
    curl -sS --unix-socket localhost:4121 -D "$1/headers" http://localhost/v2/members; echo
    tr -d '\r' <"$1/headers" | tr 'A-Z' 'a-z' | grep -v '^date:' | sort
    echo "### v2 member add"
    # etcd refuses reconfiguration until its peers have been connected for 5 s.
    local deadline=$((SECONDS + 10)) added=""
    while [ $SECONDS -lt $deadline ]; do
        added=$(ETCDCTL_API=2 $E member add m4 http://127.0.0.1:4199 2>&1) && break
        sleep 0.5
    done
    # The list is in member ID order, and the new member's ID is random.
    echo "$added" | sed '/^ETCD_INITIAL_CLUSTER=/{s/^ETCD_INITIAL_CLUSTER="//; s/"$//; s/,/\n/g}' | sort
    local id
    id=$(echo "$added" | sed -n 's/.* with ID \([0-9a-f]*\) to cluster/\1/p')
    echo "### v2 member update"; ETCDCTL_API=2 $E member update "$id" http://127.0.0.1:4198
    ETCDCTL_API=2 $E member list | grep 4198
    echo "### v2 member remove"; ETCDCTL_API=2 $E member remove "$id"; ETCDCTL_API=2 $E member list | wc -l
    echo "### v2 errors"
    ETCDCTL_API=2 $E member add m5 unix://localhost:4122; echo "rc=$?"
    ETCDCTL_API=2 $E member remove 1234; echo "rc=$?"
    ETCDCTL_API=2 $E member update 1234 http://127.0.0.1:4197; echo "rc=$?"
    curl -sS --unix-socket localhost:4121 -XPOST -d '{}' http://localhost/v2/members; echo
    curl -sS --unix-socket localhost:4121 -XPOST -H 'Content-Type: application/json' -d '{"peerURLs":["ftp://a:1"]}' http://localhost/v2/members; echo
    curl -sS --unix-socket localhost:4121 -XDELETE http://localhost/v2/members/xyz; echo
    curl -sS --unix-socket localhost:4121 -XPATCH http://localhost/v2/members; echo
    set -e
}
(unix_session "$work/e") 2>&1 | normalize >"$work/etcd.unix"
(unix_session "$work/k") 2>&1 | normalize >"$work/keel.unix"
if ! diff -u "$work/etcd.unix" "$work/keel.unix"; then
    fail "keel's session over unix sockets differs from etcd's (diff above: - etcd, + keel)"
fi
grep -q '^Added member named m4' "$work/keel.unix" || fail "v2 member add did not run: $(cat "$work/keel.unix")"
grep -q '^Removed member' "$work/keel.unix" || fail "v2 member remove did not run"
grep -q 'cluster is healthy' "$work/keel.unix" || fail "v2 cluster-health did not run"
ok "unix sockets: etcdctl v3 (3 endpoint spellings and a refused one), curl, etcdctl v2 cluster-health and member list/add/update/remove identical to etcd's ($(wc -l <"$work/keel.unix") lines)"

# A listen URL that names a path, and a client socket path already taken.
refusals() {
    cd "$1"
    set +e
    "$2" --name x --data-dir x --listen-client-urls unix:///tmp/sock --advertise-client-urls unix://localhost:4161 2>&1 |
        grep -o 'URL address does not have the form.*' | head -1
    : >localhost:4161
    timeout 10 "$2" --name x --data-dir x --listen-client-urls unix://localhost:4161 --advertise-client-urls unix://localhost:4161 \
        --listen-peer-urls unix://localhost:4162 --initial-advertise-peer-urls unix://localhost:4162 \
        --initial-cluster x=unix://localhost:4162 2>&1 | grep -o 'listen unix.*' | head -1
    set -e
}
[ "$(refusals "$work/k" "$KEEL")" = "$(refusals "$work/e" etcd)" ] ||
    fail "refusals: keel $(refusals "$work/k" "$KEEL"), etcd $(refusals "$work/e" etcd)"
ok "a unix:///path listen URL and a taken client socket path refused with etcd's errors"

for p in "${pids[@]}"; do kill "$p"; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
for d in e k; do
    left=$(cd "$work/$d" && find . -maxdepth 1 -type s)
    [ -z "$left" ] || fail "$d left socket files behind: $left"
done
ok "socket files removed when the members stop"

# http:// and https:// on one port, unix:// and unixs:// on one socket.
ca ca
cert ca srv "IP:127.0.0.1,DNS:localhost"
mixed_member() { # DIR BINARY PORT
    mkdir -p "$1"
    (cd "$1" && exec "$2" --name x --data-dir x \
        --listen-client-urls "http://127.0.0.1:$3,https://127.0.0.1:$3,unix://localhost:4171,unixs://localhost:4171" \
        --advertise-client-urls "https://127.0.0.1:$3" --cert-file "$pki/srv.crt" --key-file "$pki/srv.key" \
        --listen-peer-urls "http://127.0.0.1:$(($3 + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$(($3 + 1))" \
        --initial-cluster "x=http://127.0.0.1:$(($3 + 1))" >>x.log 2>&1) &
    pids+=($!)
}
mixed_member "$work/me" etcd 4141
mixed_member "$work/mk" "$KEEL" 4143
for p in 4141 4143; do
    within 15 etcdctl --endpoints "https://127.0.0.1:$p" --cacert "$pki/ca.crt" --dial-timeout=1s \
        --command-timeout=1s endpoint health >/dev/null 2>&1 || fail "https://127.0.0.1:$p never became healthy"
done
mixed_session() { # DIR PORT
    cd "$1"
    set +e
    echo "### https"; etcdctl --endpoints "https://127.0.0.1:$2" --cacert "$pki/ca.crt" put a 1
    echo "### unixs"; etcdctl --endpoints unixs://localhost:4171 --cacert "$pki/ca.crt" get a
    echo "### curl"; curl -sS "http://127.0.0.1:$2/version"; echo
    curl -sS --cacert "$pki/ca.crt" "https://127.0.0.1:$2/health"; echo
    curl -sS --unix-socket localhost:4171 http://localhost/version; echo
    set -e
}
(mixed_session "$work/me" 4141) >"$work/etcd.mixed" 2>&1
(mixed_session "$work/mk" 4143) >"$work/keel.mixed" 2>&1
if ! diff -u "$work/etcd.mixed" "$work/keel.mixed"; then
    fail "http and https on one port: keel differs from etcd (diff above: - etcd, + keel)"
fi
grep -q '^OK' "$work/keel.mixed" || fail "put over https failed: $(cat "$work/keel.mixed")"
ok "http:// and https:// on one port, unix:// and unixs:// on one socket: etcdctl over https and unixs, curl over http, https and unix as etcd"

# etcd 3.4.23 answers plaintext HTTP/1 on such a socket but its plaintext gRPC times out
# (etcdctl over http:// or unix:// fails there); keel serves it.
run in_dir "$work/mk" etcdctl --endpoints http://127.0.0.1:4143 put b 2
[ "$out" = OK ] || fail "etcdctl over http on the shared port: $out"
run in_dir "$work/mk" etcdctl --endpoints unix://localhost:4171 get b --print-value-only
[ "$out" = 2 ] || fail "etcdctl over unix on the shared socket: $out"
ok "keel: etcdctl over http:// and unix:// on the sockets shared with https:// and unixs://"

# The L4 gateway: keel's in front of keel and of etcd, etcd's in front of keel (and, for
# the reference output, of etcd), each listing a dead endpoint first.
gateway() { # BINARY LISTEN_PORT MEMBER_PORT
    "$1" gateway start --listen-addr "127.0.0.1:$2" --endpoints "127.0.0.1:4189,http://127.0.0.1:$3" \
        --retry-delay 1s >>"$work/gateway$2.log" 2>&1 &
    pids+=($!)
}
gateway "$KEEL" 4181 4143
gateway "$KEEL" 4182 4141
gateway etcd 4183 4143
gateway etcd 4184 4141
for p in 4181 4182 4183 4184; do
    within 15 etcdctl --endpoints "https://127.0.0.1:$p" --cacert "$pki/ca.crt" --dial-timeout=1s \
        --command-timeout=1s endpoint health >/dev/null 2>&1 || fail "gateway 127.0.0.1:$p never forwarded"
done
through() { # GATEWAY_PORT
    local E="etcdctl --endpoints https://127.0.0.1:$1 --cacert $pki/ca.crt"
    set +e
    for i in 1 2 3 4; do $E put "g$i" "v$i"; done
    $E get g --prefix
    $E endpoint health 2>&1 | sed 's/took = .*/took = T/'
    $E member list | cut -d, -f2-
    set -e
}
through 4184 >"$work/etcd.gateway" 2>&1
grep -q '^v4$' "$work/etcd.gateway" || fail "etcd's gateway: $(cat "$work/etcd.gateway")"
for p in 4181 4182 4183; do
    through "$p" 2>&1 | sed "s/:414[1-4]/:EP/g; s/:418[1-4]/:GW/g" >"$work/gateway$p.out"
    sed "s/:414[1-4]/:EP/g; s/:418[1-4]/:GW/g" "$work/etcd.gateway" | diff -u - "$work/gateway$p.out" ||
        fail "through the gateway on $p: differs from etcd's gateway in front of etcd (diff above)"
done
run "$KEEL" gateway start --listen-addr 127.0.0.1:4181 --endpoints 127.0.0.1:4143
keel_taken="$out/$rc"
run etcd gateway start --listen-addr 127.0.0.1:4181 --endpoints 127.0.0.1:4143
[ "$keel_taken" = "$out/$rc" ] || fail "gateway on a taken port: keel $keel_taken, etcd $out/$rc"
[ "$keel_taken" = "listen tcp 127.0.0.1:4181: bind: address already in use/1" ] || fail "gateway on a taken port: $keel_taken"
for a in "" "start --help" "start --bogus" "start --endpoints 127.0.0.1 --listen-addr 127.0.0.1:4190" \
    "start --endpoints http://127.0.0.1:4190 --listen-addr 127.0.0.1:4190"; do
    run "$KEEL" gateway $a
    keel_said="$out/$rc"
    run etcd gateway $a
    [ "$keel_said" = "$out/$rc" ] || fail "gateway $a: keel said $keel_said, etcd $out/$rc"
done
ok "gateway: etcdctl through keel's gateway to keel and to etcd and through etcd's gateway to keel as through etcd's to etcd (a dead endpoint skipped); help, flag errors and refused endpoints as etcd's"

echo "listeners: $passed checks passed"
