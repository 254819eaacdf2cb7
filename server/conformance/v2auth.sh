#!/usr/bin/env bash
# etcd 3.4's v2 auth API under --enable-v2, keel and a real etcd 3.4.23 side by side,
# identical output required: the same ETCDCTL_API=2 etcdctl session (user add/get/list/
# passwd/grant/revoke/remove, role add/get/list/grant/revoke/remove, auth enable/disable,
# set/get/ls/mk/rm/mkdir/rmdir as guest, as users with and without the permission, with
# wrong passwords, member changes without root) and curl calls (status, headers, exact
# bodies of every /v2/auth endpoint, refusals, malformed bodies and credentials); then
# both restarted (the auth state persisted), and the same checks on a follower of a
# 3-member keel and etcd cluster.
#
# Normalized, because they differ by construction: the cluster ID (it hashes the peer
# URLs, which differ by port), and v2 store indexes (X-Etcd-Index, createdIndex,
# modifiedIndex, "[N]" in etcdctl errors): etcd's v2 store counts its own internal writes
# (member attributes, cluster version, auth directories), keel's index is its MVCC
# revision. Header names are compared without case (Go canonicalizes them), in sorted
# order, without Date. Needs etcd, etcdctl, curl and a release build of keel; every
# process is stopped at exit. Ports 9300-9699. Usage: v2auth.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="$(realpath "${1:-$here/../../target/release/keel}")"
source "$here/lib.sh"

# norm: the normalization above, on a session's output.
norm() {
    sed -E -e 's/(x-etcd-cluster-id: )[0-9a-f]+/\1CID/' \
        -e 's/(x-etcd-index|x-raft-index|x-raft-term): [0-9]+/\1: N/' \
        -e 's/"(modifiedIndex|createdIndex|index)":[0-9]+/"\1":N/g' \
        -e 's/\[[0-9]+\]$/[N]/' \
        -e 's/"id":"[0-9a-f]+"/"id":"ID"/g' -e 's/"name":"c?[ek]([0-9])"/"name":"m\1"/g' \
        -e 's/127\.0\.0\.1:9[0-9]{3}/HOST:PORT/g'
}

# c CMD...: a command's merged output (without speakeasy's complaint that stdin is no
# terminal) and exit code.
c() {
    echo "\$ ${*#env ETCDCTL_API=2 }"
    set +e
    timeout 20 "$@" >"$work/c.out" 2>&1
    local rc=$?
    set -e
    grep -av '^stty:' "$work/c.out" || true
    echo "rc=$rc"
}

# h METHOD URL [curl args...]: status line, headers (lowercased, sorted, no date), body.
h() {
    local m=$1 u=$2
    shift 2
    echo "\$ curl -X $m ${u#http://127.0.0.1:33[0-9][0-9][0-9]} $*"
    local how=(-X "$m" -o "$work/h.body")
    : >"$work/h.body"
    # A HEAD answer has no body to wait for.
    [ "$m" = HEAD ] && how=(-I -o /dev/null)
    curl -sS --max-time 10 "${how[@]}" -D "$work/h.head" "$u" "$@" || echo "curl failed"
    tr -d '\r' <"$work/h.head" | head -1
    tr -d '\r' <"$work/h.head" | tail -n +2 | grep -v '^$' | tr 'A-Z' 'a-z' | grep -v '^date:' | sort
    cat "$work/h.body"
    echo
}

# session URL: the whole v2 auth sequence against one client URL.
session() {
    local U=$1
    local e="env ETCDCTL_API=2 etcdctl --endpoints $U --no-sync"
    local root="--username root:rootpw"
    echo "### auth off, nothing stored"
    h GET "$U/v2/auth/enable"
    h GET "$U/v2/auth/users"
    h GET "$U/v2/auth/roles"
    c $e user list
    c $e role list
    c $e auth enable
    echo "### users"
    c $e user add root:rootpw
    c $e user add alice:apw
    c $e user add alice:apw2
    c $e user add bob </dev/null
    c $e user get root
    c $e user get alice
    c $e user get nosuch
    c $e user list
    c $e user passwd alice <<<"alice-pw"
    c $e user passwd nosuch <<<"x"
    echo "### roles"
    c $e role add reader
    c $e role add reader
    c $e role add root
    c $e role add writer
    c $e role grant reader --path '/pub/*' --read
    c $e role grant reader --path '/pub/*' --read
    c $e role grant writer --path '/pub/*' --readwrite
    c $e role grant writer --path /priv --write
    c $e role grant writer --path /priv2 --rw
    c $e role grant writer --path '/a//b' --read
    c $e role grant writer --path /x
    c $e role grant nosuch --path /x --read
    c $e role grant root --path /x --read
    c $e role revoke writer --path /priv2 --readwrite
    c $e role revoke writer --path /priv2 --readwrite
    c $e role revoke writer --path /never --read
    c $e role get reader
    c $e role get writer
    c $e role get root
    c $e role get nosuch
    c $e role list
    echo "### grants"
    c $e user grant alice --roles reader
    c $e user grant alice --roles reader
    c $e user grant alice --roles writer,ghost
    c $e user grant alice
    c $e user get alice
    c $e user revoke alice --roles ghost
    c $e user revoke alice --roles ghost
    c $e user get alice
    c $e user grant bob --roles reader
    c $e user list
    echo "### keys with auth off"
    c $e set /pub/a 1
    c $e set /priv p
    c $e --username alice:wrong get /pub/a
    echo "### enable"
    c $e auth enable
    c $e auth enable
    c $e $root auth enable
    h GET "$U/v2/auth/enable"
    c $e user list
    c $e --username alice:alice-pw user list
    c $e --username alice:wrong user list
    c $e $root user list
    c $e $root role list
    c $e $root role get guest
    h GET "$U/v2/auth/users" -u root:rootpw
    h GET "$U/v2/auth/roles" -u root:rootpw
    h GET "$U/v2/auth/users/alice" -u root:rootpw
    h GET "$U/v2/auth/users/alice" -u alice:alice-pw
    h GET "$U/v2/auth/users/alice" -H 'Authorization: bAsIc cm9vdDpyb290cHc='
    h GET "$U/v2/auth/users/alice" -H 'Authorization: Basic cm9vdDpyb290cHc'
    h GET "$U/v2/auth/users/alice" -H 'Authorization: Bearer x'
    echo "### keys as a guest (the default guest role: everything)"
    c $e get /pub/a
    c $e set /guest g
    c $e ls --sort /
    echo "### keys as alice (reader: read /pub/*; writer: readwrite /pub/*, write /priv)"
    local a="--username alice:alice-pw"
    c $e $a get /pub/a
    c $e $a set /pub/b 2
    c $e $a ls /pub
    c $e $a ls /pub/
    c $e $a ls --recursive /pub/
    c $e $a set /priv q
    c $e $a get /priv
    c $e $a get /guest
    c $e $a mkdir /pub/d
    c $e $a rmdir /pub/d
    c $e $a mk /pub/c 3
    c $e $a rm /pub/c
    c $e $a rm --recursive /pub
    c $e --username alice:wrong get /pub/a
    c $e --username nobody:x get /pub/a
    h GET "$U/v2/keys/pub/a" -u alice:wrong
    h PUT "$U/v2/keys/priv" -u alice:alice-pw -d value=z
    h PUT "$U/v2/keys/pub/z" -u alice:alice-pw -d value=z
    h GET "$U/v2/keys/pub?recursive=true" -u alice:alice-pw
    h GET "$U/v2/keys/pub/?recursive=true&sorted=true" -u alice:alice-pw
    h GET "$U/v2/keys/pub/a?recursive=bad" -u alice:wrong
    echo "### the guest role narrowed, then removed"
    c $e $root role revoke guest --path '/*' --write
    c $e set /guest g2
    c $e get /guest
    c $e $root role remove guest
    c $e get /guest
    c $e $a get /guest
    echo "### root only"
    c $e $a role add other
    c $e $a auth disable
    c $e $root user remove root
    c $e $root user remove bob
    c $e $root role remove root
    c $e $root role remove nosuch
    c $e $root role add temp
    c $e $root role remove temp
    c $e $root user get alice
    h DELETE "$U/v2/members/1234"
    h DELETE "$U/v2/members/1234" -u alice:alice-pw
    h DELETE "$U/v2/members/1234" -u root:rootpw
    # Reads need no root (the answer names member IDs, whose length differs).
    echo "GET /v2/members as alice:wrong: $(curl -sS -o /dev/null -w '%{http_code}' -u alice:wrong "$U/v2/members")"
    h POST "$U/v2/members" -H 'Content-Type: application/json' -d '{"peerURLs":["http://127.0.0.1:9999"]}'
    h DELETE "$U/v2/auth/enable" -u alice:alice-pw
    h GET "$U/v2/auth/enable" -u alice:wrong
    echo "### requests etcdctl never sends"
    local r=(-u root:rootpw)
    h PUT "$U/v2/auth/users/carol" "${r[@]}" -d '{"user":"carol","password":"c"}'
    h PUT "$U/v2/auth/users/carol" "${r[@]}" -d '{"user":"carol"}'
    h PUT "$U/v2/auth/users/carol" "${r[@]}" -d '{"user":"carol"}'
    h PUT "$U/v2/auth/users/carol" "${r[@]}" -d '{"User":"carol","passWord":"c2","roles":["z","y","z"]}{trailing'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","password":"d","roles":["y","x"]}'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","password":"d","roles":["y"]}'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","roles":["y"],"grant":["x"]}'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","grant":["%d%%"]}'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","grant":["%d%%"]}'
    h PUT "$U/v2/auth/users/dave" "${r[@]}" -d '{"user":"dave","revoke":["nope"]}'
    h PUT "$U/v2/auth/users/erin" "${r[@]}" -d '{"user":"erin"}'
    h PUT "$U/v2/auth/users/erin" "${r[@]}" -d '{"user":"erin","password":"e","roles":[]}'
    h PUT "$U/v2/auth/users/ghost" "${r[@]}" -d '{"user":"ghost","grant":["a"]}'
    h PUT "$U/v2/auth/users/x" "${r[@]}" -d '{"user":"y","password":"p"}'
    h PUT "$U/v2/auth/users/x" "${r[@]}" -d 'null'
    h PUT "$U/v2/auth/users/x" "${r[@]}" -d ''
    h PUT "$U/v2/auth/users/x" "${r[@]}" -d '{"user":"x","password":1}'
    h PUT "$U/v2/auth/users/x" "${r[@]}" -d '{"user":"x<&>","password":"p"}'
    h GET "$U/v2/auth/users/a/b" "${r[@]}"
    h GET "$U/v2/auth/users/a%2Fb" "${r[@]}"
    h GET "$U/v2/auth/users/" "${r[@]}"
    h PUT "$U/v2/auth/users/" "${r[@]}"
    h POST "$U/v2/auth/users/alice" "${r[@]}"
    h HEAD "$U/v2/auth/enable"
    h GET "$U/v2/auth/enable/"
    h GET "$U/v2/auth/nothing"
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","grant":{},"permissions":{"kv":{"read":["/a","/a"]}}}'
    h GET "$U/v2/auth/roles/r1" "${r[@]}"
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","grant":{"kv":{"write":["/b%d"]}}}'
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","grant":{"kv":{"write":["/b%d"]}}}'
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","revoke":{"kv":{"read":["/a"],"write":["/zz"]}}}'
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","revoke":{"kv":{"read":["/a"]}}}'
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1","permissions":{"kv":{"read":["/q"]}},"grant":{"kv":{"read":["/q"]}}}'
    h PUT "$U/v2/auth/roles/r1" "${r[@]}" -d '{"role":"r1"}'
    h PUT "$U/v2/auth/roles/r2" "${r[@]}" -d '{"role":"r2","grant":{"kv":{"read":["/q"]}}}'
    h PUT "$U/v2/auth/roles/r2" "${r[@]}" -d '{"role":"nope"}'
    h PUT "$U/v2/auth/roles/r2" "${r[@]}" -d '{"role":"r2","grant":[]}'
    h PUT "$U/v2/auth/roles/root" "${r[@]}" -d '{"role":"root"}'
    h DELETE "$U/v2/auth/roles/root" "${r[@]}"
    h GET "$U/v2/auth/roles/a/b" "${r[@]}"
    h POST "$U/v2/auth/roles" "${r[@]}"
    h GET "$U/v2/auth/users" "${r[@]}"
    h GET "$U/v2/auth/roles" "${r[@]}"
    echo "### disable, enable again"
    c $e $root auth disable
    c $e $root auth disable
    c $e user list
    c $e get /guest
    c $e $root auth enable
    c $e $root role get guest
    c $e $root role revoke guest --path '/*' --write
}

# after_restart URL: what the first session left, read back.
after_restart() {
    local U=$1
    local e="env ETCDCTL_API=2 etcdctl --endpoints $U --no-sync"
    h GET "$U/v2/auth/enable"
    c $e --username root:rootpw user list
    c $e --username root:rootpw role list
    c $e --username alice:alice-pw get /pub/a
    c $e --username alice:alice-pw set /priv p3
    c $e --username alice:wrong get /pub/a
    c $e get /pub/a
    c $e set /pub/a guest
    c $e user list
    h GET "$U/v2/auth/users/alice" -u root:rootpw
}

# cluster_session URL: users, roles and checks through one (follower) member.
cluster_session() {
    local U=$1
    local e="env ETCDCTL_API=2 etcdctl --endpoints $U --no-sync"
    local root="--username root:rootpw"
    c $e user add root:rootpw
    c $e user add alice:apw
    c $e role add reader
    c $e role grant reader --path '/pub/*' --read
    c $e user grant alice --roles reader
    c $e set /pub/a 1
    c $e auth enable
    c $e $root role revoke guest --path '/*' --readwrite
    c $e --username alice:apw get /pub/a
    c $e --username alice:apw set /pub/a 2
    c $e set /pub/a 3
    c $e get /pub/a
    c $e $root user list
    c $e $root role get guest
    h GET "$U/v2/auth/users/alice" -u root:rootpw
    c $e $root auth disable
}

ie="e1=http://127.0.0.1:9302"
ik="k1=http://127.0.0.1:9402"
start_etcd e1 9301 9302 "$ie" --enable-v2
start_keel k1 9401 9402 "$ik" --enable-v2
wait_healthy http://127.0.0.1:9301
wait_healthy http://127.0.0.1:9401
ok "etcd and keel up with --enable-v2"

session http://127.0.0.1:9301 | norm >"$work/etcd.txt"
session http://127.0.0.1:9401 | norm >"$work/keel.txt"
if ! diff -u "$work/etcd.txt" "$work/keel.txt"; then
    fail "v2 auth session differs from etcd's (above: - etcd, + keel)"
fi
[ "$(grep -c '^\$ ' "$work/keel.txt")" -gt 150 ] || fail "the session ran too few steps"
ok "the v2 auth session: $(grep -c '^\$ ' "$work/keel.txt") etcdctl and curl steps, identical output"

# Both restarted: the auth state and the permissions come back from disk.
kill "$pid_e1" "$pid_k1"
wait "$pid_e1" "$pid_k1" 2>/dev/null || true
start_etcd e1 9301 9302 "$ie" --enable-v2
start_keel k1 9401 9402 "$ik" --enable-v2
wait_healthy http://127.0.0.1:9301
wait_healthy http://127.0.0.1:9401
after_restart http://127.0.0.1:9301 | norm >"$work/etcd2.txt"
after_restart http://127.0.0.1:9401 | norm >"$work/keel2.txt"
diff -u "$work/etcd2.txt" "$work/keel2.txt" || fail "after a restart keel's v2 auth differs from etcd's"
matches -F '{"enabled":true}' "$work/keel2.txt" || fail "auth is not enabled after the restart"
ok "after a restart: auth still enabled, users, roles and permissions as before (same as etcd)"
kill "$pid_e1" "$pid_k1"
wait "$pid_e1" "$pid_k1" 2>/dev/null || true

# 3-member clusters: everything through a follower.
cluster() { # BINARY PREFIX BASE
    local bin=$1 p=$2 b=$3 i ic=""
    for i in 1 2 3; do ic+="${ic:+,}$p$i=http://127.0.0.1:$((b + 10 * i + 2))"; done
    for i in 1 2 3; do
        start_member "$bin" http "$p$i" $((b + 10 * i + 1)) $((b + 10 * i + 2)) "$ic" --enable-v2
    done
}
follower() { # the client URL of a member that is not the leader
    local eps=$1 line
    etcdctl --endpoints "$eps" endpoint status -w json |
        python3 -c 'import json,sys
for s in json.load(sys.stdin):
    if s["Status"]["leader"] != s["Status"]["header"]["member_id"]:
        print(s["Endpoint"]); break'
}
cluster etcd ce 9500
cluster "$KEEL" ck 9600
eps_e="http://127.0.0.1:9511,http://127.0.0.1:9521,http://127.0.0.1:9531"
eps_k="http://127.0.0.1:9611,http://127.0.0.1:9621,http://127.0.0.1:9631"
for u in ${eps_e//,/ } ${eps_k//,/ }; do wait_healthy "$u" 20; done
fe=$(follower "$eps_e")
fk=$(follower "$eps_k")
[ -n "$fe" ] && [ -n "$fk" ] || fail "no follower found"
cluster_session "$fe" | norm >"$work/etcd3.txt"
cluster_session "$fk" | norm >"$work/keel3.txt"
diff -u "$work/etcd3.txt" "$work/keel3.txt" || fail "v2 auth through a follower differs from etcd's"
# The other members see the same users (replicated, not local to the follower).
for u in ${eps_k//,/ }; do
    out=$(ETCDCTL_API=2 etcdctl --endpoints "$u" --no-sync user list 2>&1 | grep -v '^stty' || true)
    [ "$out" = "$(printf 'alice\nroot')" ] || fail "member $u lists users: $out"
done
ok "through a follower of 3-member clusters: same output as etcd; every keel member lists the users"
echo "v2auth: $passed checks passed"
