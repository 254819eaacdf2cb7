#!/usr/bin/env bash
# etcd's auth API through etcdctl 3.4, every check asserting the exact output (or error
# text and exit code) etcd 3.4.23 prints: users, roles and permissions; `auth enable`
# and what a user with a read-only role may and may not do (KV, txn, watch, leases,
# compaction, cluster and maintenance calls, user and role admin); revoking a role or a
# permission; changing a password; `auth disable` and enabling without a root user;
# users, roles and the enabled state surviving kill -9; simple-token expiry
# (--auth-token-ttl); RS256 JWT tokens (--auth-token jwt,...), checked with openssl; the
# client certificate's CN as the user name (--client-cert-auth). A few checks speak gRPC
# directly with curl (HTTP/2) to assert status codes and tokens.
#
# Single-member servers on loopback 21379/21380 (plain), 21479/21480 (JWT), 21579/21580
# (TLS); no other conformance script uses 21xxx. Every process is stopped at exit.
# Needs etcdctl 3.4, openssl, curl with HTTP/2 and python3.
#
# Usage: auth.sh [path/to/server]  or  KEEL=path/to/server auth.sh
#   default: target/debug/keel. The same flags are valid for etcd 3.4, so
#   KEEL=$(command -v etcd) bash server/conformance/auth.sh checks the script itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-${KEEL:-$here/../../target/debug/keel}}"
source "$here/lib.sh"
started=$SECONDS

# start NAME SCHEME CLIENT_PORT PEER_PORT [extra flags...]: one member, data in
# $work/NAME, log in $work/NAME.log; its PID in $server.
start() {
    local name=$1 scheme=$2 cp=$3 pp=$4
    shift 4
    "$KEEL" --name "$name" --data-dir "$work/$name" \
        --listen-client-urls "$scheme://127.0.0.1:$cp" --advertise-client-urls "$scheme://127.0.0.1:$cp" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --initial-cluster "$name=http://127.0.0.1:$pp" --heartbeat-interval 50 --election-timeout 500 \
        --bcrypt-cost 4 "$@" >>"$work/$name.log" 2>&1 &
    server=$!
    pids+=($server)
}
stop() { kill -9 "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }

# wait_up CMD...: until the etcdctl command CMD succeeds, for at most 15 s.
wait_up() {
    local deadline=$((SECONDS + 15))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "the server never answered: $*: $("$@" 2>&1 | tail -1)"
        sleep 0.1
    done
}

# expect WHAT RC OUTPUT CMD...: CMD exits with RC and prints exactly OUTPUT.
expect() {
    local what=$1 want_rc=$2 want=$3
    shift 3
    run "$@"
    [ "$rc" = "$want_rc" ] && [ "$out" = "$want" ] ||
        fail "$what: $*"$'\n'"expected (exit $want_rc):"$'\n'"$want"$'\n'"got (exit $rc):"$'\n'"$out"
    ok "$what"
}
# expect_re WHAT RC REGEX CMD...: the same with an extended regex matching all of OUTPUT.
expect_re() {
    local what=$1 want_rc=$2 want=$3
    shift 3
    run "$@"
    [ "$rc" = "$want_rc" ] && [[ "$out" =~ ^$want$ ]] ||
        fail "$what: $*"$'\n'"expected (exit $want_rc) to match:"$'\n'"$want"$'\n'"got (exit $rc):"$'\n'"$out"
    ok "$what"
}

DENIED="Error: etcdserver: permission denied"
BADPW="Error: etcdserver: authentication failed, invalid user ID or password"
NOUSER="Error: etcdserver: user name is empty"

# Raw gRPC over h2c (or TLS) with curl, for status codes and tokens etcdctl hides.
cat >"$work/grpc.py" <<'PY'
import sys
def field(n, v):
    v = v.encode()
    out, k = bytes([n << 3 | 2]), len(v)
    while True:
        out += bytes([(k & 0x7F) | (0x80 if k > 0x7F else 0)])
        k >>= 7
        if not k:
            return out + v
def varint(b, i):
    r = s = 0
    while True:
        c = b[i]; i += 1; r |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return r, i
if sys.argv[1] == "encode":  # encode FIELD1 [FIELD2]: a message of string fields 1, 2
    m = b"".join(field(n + 1, v) for n, v in enumerate(sys.argv[2:]))
    sys.stdout.buffer.write(b"\0" + len(m).to_bytes(4, "big") + m)
else:  # field N FILE: string field N of the framed response in FILE
    b, i = open(sys.argv[3], "rb").read()[5:], 0
    while i < len(b):
        key, i = varint(b, i)
        if key & 7 == 0:
            _, i = varint(b, i)
            continue
        n, i = varint(b, i)
        if key >> 3 == int(sys.argv[2]):
            print(b[i:i + n].decode())
        i += n
PY
# grpc URL METHOD TOKEN FIELDS...: prints "grpc-status N: MESSAGE"; the response in $work/resp.
# seed_users ETCDCTL...: root, alice with the role reader (read on /pub/), and /pub/a.
seed_users() {
    local c
    for c in "user add root:rootpw" "user add alice:apw" "role add reader" \
        "role grant-permission reader read /pub/ --prefix=true" "user grant-role alice reader" "put /pub/a va"; do
        run "$@" $c
        [ "$rc" = 0 ] || fail "$c: $out"
    done
}

grpc() {
    local url=$1 method=$2 token=$3
    shift 3
    python3 "$work/grpc.py" encode "$@" >"$work/req"
    local hdr=()
    [ -z "$token" ] || hdr=(-H "token: $token")
    curl -sS --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' "${hdr[@]}" \
        --data-binary @"$work/req" -o "$work/resp" -D "$work/resp.hdr" "$url/$method" ||
        fail "curl $method"
    local st msg
    st=$(tr -d '\r' <"$work/resp.hdr" | sed -n 's/^grpc-status: //p')
    # gRPC percent-encodes grpc-message; servers differ in which bytes they escape.
    msg=$(tr -d '\r' <"$work/resp.hdr" | sed -n 's/^grpc-message: //p' |
        python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.stdin.read().rstrip("\n")))')
    echo "grpc-status $st: $msg"
}
token_of() { python3 "$work/grpc.py" field 2 "$work/resp"; } # AuthenticateResponse.token

echo "== users, roles, auth enable: simple tokens, --auth-token-ttl 3, 127.0.0.1:21379"
start auth http 21379 21380 --auth-token simple --auth-token-ttl 3
EP=127.0.0.1:21379
URL=http://$EP
E="etcdctl --endpoints=$EP --dial-timeout=2s --command-timeout=5s"
R="$E --user root:rootpw"
A="$E --user alice:apw"
wait_up $E endpoint health

expect "user add root" 0 "User root created" $E user add root:rootpw
expect "user add alice" 0 "User alice created" $E user add alice:apw
expect "user add of an existing user" 1 "Error: etcdserver: user name already exists" $E user add alice:other
expect "user list" 0 $'alice\nroot' $E user list
expect "user get alice (no roles)" 0 $'User: alice\nRoles:' $E user get alice
expect "user get of a missing user" 1 "Error: etcdserver: user name not found" $E user get nobody
expect "role add reader" 0 "Role reader created" $E role add reader
expect "role add writer" 0 "Role writer created" $E role add writer
expect "role add of an existing role" 1 "Error: etcdserver: role name already exists" $E role add reader
expect "role get of a missing role" 1 "Error: etcdserver: role name not found" $E role get nobody
expect "role grant-permission reader read /pub/ --prefix" 0 "Role reader updated" \
    $E role grant-permission reader read /pub/ --prefix=true
expect "role grant-permission writer readwrite k1" 0 "Role writer updated" $E role grant-permission writer readwrite k1
expect "role grant-permission writer write /w/ --prefix" 0 "Role writer updated" \
    $E role grant-permission writer write /w/ --prefix=true
expect "role grant-permission writer read [/r/a, /r/c)" 0 "Role writer updated" \
    $E role grant-permission writer read /r/a /r/c
expect "role grant-permission writer write z --from-key" 0 "Role writer updated" \
    $E role grant-permission writer write z --from-key
expect "role get reader" 0 $'Role reader\nKV Read:\n\t[/pub/, /pub0) (prefix /pub/)\nKV Write:' $E role get reader
expect "role get writer: permissions sorted by key, open end printed without ')'" 0 \
    $'Role writer\nKV Read:\n\t[/r/a, /r/c)\n\tk1\nKV Write:\n\t[/w/, /w0) (prefix /w/)\n\tk1\n\t[z, <open ended>' \
    $E role get writer
$E role grant-permission writer read k1 >/dev/null
expect "granting the same key again replaces its permission type (readwrite k1 → read k1)" 0 \
    $'Role writer\nKV Read:\n\t[/r/a, /r/c)\n\tk1\nKV Write:\n\t[/w/, /w0) (prefix /w/)\n\t[z, <open ended>' \
    $E role get writer
expect "user grant-role alice reader" 0 "Role reader is granted to user alice" $E user grant-role alice reader
expect "user grant-role of a missing role" 1 "Error: etcdserver: role name not found" $E user grant-role alice nonexist
expect "user get alice" 0 $'User: alice\nRoles: reader' $E user get alice
expect "user get alice --detail" 0 \
    $'User: alice\n\nRole reader\nKV Read:\n\t[/pub/, /pub0) (prefix /pub/)\nKV Write:' $E user get alice --detail
expect "role list" 0 $'reader\nwriter' $E role list
expect "put /pub/a before auth" 0 OK $E put /pub/a va
expect "put secret before auth" 0 OK $E put secret sv

expect "auth enable (etcdctl creates the root role and grants it to root)" 0 "Authentication Enabled" $E auth enable
expect "auth enable again without --user" 1 "$NOUSER" $E auth enable
expect "auth enable again by root: no error" 0 "Authentication Enabled" $R auth enable
expect "role list shows the root role" 0 $'reader\nroot\nwriter' $R role list
expect "user get root" 0 $'User: root\nRoles: root' $R user get root
expect "role get root: no key permissions listed" 0 $'Role root\nKV Read:\nKV Write:' $R role get root

echo "== what alice (role reader: read /pub/*) may do"
expect "get without --user" 1 "$NOUSER" $E get foo
expect "put without --user" 1 "$NOUSER" $E put foo bar
expect "wrong password (exit 2)" 2 "$BADPW" $E --user alice:wrong get x
expect "unknown user (exit 2)" 2 "$BADPW" $E --user nobody:x get x
expect "alice get /pub/a --prefix" 0 $'/pub/a\nva' $A get /pub/a --prefix
expect "alice get /pub/a" 0 $'/pub/a\nva' $A get /pub/a
expect "alice get of a missing key inside her prefix: empty" 0 "" $A get /pub/zz
expect "alice get /pub --prefix (wider than her prefix) denied" 1 "$DENIED" $A get /pub --prefix
expect "alice put /pub/a denied" 1 "$DENIED" $A put /pub/a v
expect "alice get secret denied" 1 "$DENIED" $A get secret
expect "alice del secret denied" 1 "$DENIED" $A del secret
expect "alice del /pub/a (read-only) denied" 1 "$DENIED" $A del /pub/a
expect "root get secret" 0 $'secret\nsv' $R get secret
expect "root put secret" 0 OK $R put secret s2
expect "root del of a missing key" 0 0 $R del nothing
expect "alice txn reading /pub/a" 0 $'SUCCESS\n\n/pub/a\nva' \
    $A txn < <(printf 'value("/pub/a") = "va"\n\nget /pub/a\n\n\n')
expect "alice txn, failure branch taken" 0 $'FAILURE\n\n/pub/a\nva' \
    $A txn < <(printf 'value("/pub/a") = "nope"\n\n\nget /pub/a\n\n')
expect "alice txn putting secret denied" 1 "$DENIED" \
    $A txn < <(printf 'value("/pub/a") = "va"\n\nput secret x\n\n\n')
expect "alice txn comparing secret denied" 1 "$DENIED" \
    $A txn < <(printf 'value("secret") = "s2"\n\nget /pub/a\n\n\n')
expect "alice txn with secret only in the branch not taken: still denied" 1 "$DENIED" \
    $A txn < <(printf 'value("/pub/a") = "va"\n\nget /pub/a\n\nget secret\n\n')
expect "root txn" 0 $'SUCCESS\n\nOK' $R txn < <(printf 'value("secret") = "s2"\n\nput secret s3\n\n\n')
expect "alice watch secret: canceled by the server (exit 5)" 5 \
    $'watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)\nError: watch is canceled by the server' \
    timeout 5 $A watch secret
rev=$($R get /pub/a -w json | python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
timeout 10 $A watch /pub/ --prefix --rev $((rev + 1)) >"$work/watch.out" 2>&1 &
watcher=$!
pids+=($watcher)
$R put /pub/b vb >/dev/null
for _ in $(seq 1 50); do [ "$(grep -c . "$work/watch.out")" -ge 3 ] && break; sleep 0.1; done
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
[ "$(grep -av '^{"level":' "$work/watch.out")" = $'PUT\n/pub/b\nvb' ] || fail "alice watch /pub/: $(cat "$work/watch.out")"
ok "alice watch /pub/ --prefix sees root's put"

expect_re "alice lease grant" 0 'lease [0-9a-f]+ granted with TTL\(100s\)' $A lease grant 100
lease=$(echo "$out" | awk '{print $2}')
expect_re "lease grant without --user works" 0 'lease [0-9a-f]+ granted with TTL\(10s\)' $E lease grant 10
expect_re "lease list without --user works" 0 "found 2 leases"$'\n''[0-9a-f]+'$'\n''[0-9a-f]+' $E lease list
expect "root put hidden with alice's lease" 0 OK $R put hidden h --lease="$lease"
expect_re "alice lease timetolive --keys names the key she cannot read" 0 \
    "lease $lease granted with TTL\\(100s\\), remaining\\((99|100)s\\), attached keys\\(\\[hidden\\]\\)" \
    $A lease timetolive "$lease" --keys
expect "alice lease keep-alive --once" 0 "lease $lease keepalived with TTL(100)" $A lease keep-alive --once "$lease"
expect "alice lease revoke with hidden attached denied" 1 "Error: failed to revoke lease (etcdserver: permission denied)" \
    $A lease revoke "$lease"
expect "root lease revoke" 0 "lease $lease revoked" $R lease revoke "$lease"
expect "the lease's key is gone" 0 "" $R get hidden
rev=$($R get /pub/a -w json | python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
expect "alice compaction: allowed in etcd 3.4" 0 "compacted revision 2" $A compaction 2
expect "compaction without --user: allowed in etcd 3.4" 0 "compacted revision 3" $E compaction 3
expect "root compaction" 0 "compacted revision $rev" $R compaction "$rev"
MEMBER='[0-9a-f]+, started, auth, http://127\.0\.0\.1:21380, http://127\.0\.0\.1:21379, false'
expect_re "alice member list" 0 "$MEMBER" $A member list
expect_re "member list without --user" 0 "$MEMBER" $E member list
STATUS='127\.0\.0\.1:21379, [0-9a-f]+, [0-9.]+, [0-9.]+ [kMG]?B, true, false, [0-9]+, [0-9]+, [0-9]+, '
expect_re "alice endpoint status" 0 "$STATUS" $A endpoint status
expect_re "endpoint status without --user" 0 "$STATUS" $E endpoint status
expect "alarm list without --user: empty" 0 "" $E alarm list
expect_re "alice endpoint health: healthy (its get of \"health\" is denied, which counts as healthy)" 0 \
    '127\.0\.0\.1:21379 is healthy: successfully committed proposal: took = .*' $A endpoint health
expect_re "endpoint health without --user: unhealthy" 1 \
    '127\.0\.0\.1:21379 is unhealthy: failed to commit proposal: etcdserver: user name is empty'$'\n''Error: unhealthy cluster' \
    $E endpoint health
expect "alice snapshot save denied (gRPC Unknown, \"auth: permission denied\", exit 5)" 5 \
    "Error: rpc error: code = Unknown desc = auth: permission denied" $A snapshot save "$work/alice.db"
expect "alice defrag denied" 1 \
    "Failed to defragment etcd member[127.0.0.1:21379] (rpc error: code = Unknown desc = auth: permission denied)" \
    $A defrag
expect "alice user add bob denied" 1 "$DENIED" $A user add bob:b
expect "alice role add denied" 1 "$DENIED" $A role add r2
expect "alice user list denied" 1 "$DENIED" $A user list
expect "alice role list denied" 1 "$DENIED" $A role list
expect "alice user get alice (herself) allowed" 0 $'User: alice\nRoles: reader' $A user get alice
expect "alice user get root denied" 1 "$DENIED" $A user get root
expect "alice role get reader (her role) allowed" 0 $'Role reader\nKV Read:\n\t[/pub/, /pub0) (prefix /pub/)\nKV Write:' \
    $A role get reader
expect "alice role get writer (not hers) denied" 1 "$DENIED" $A role get writer
expect "alice auth disable denied" 1 "$DENIED" $A auth disable
expect "alice user passwd alice (her own) denied" 1 "$DENIED" $A user passwd alice --interactive=false < <(echo x)

echo "== gRPC status codes and simple tokens (curl, HTTP/2)"
expect "Authenticate with a wrong password: InvalidArgument" 0 \
    "grpc-status 3: etcdserver: authentication failed, invalid user ID or password" \
    grpc $URL etcdserverpb.Auth/Authenticate "" root bad
expect "Range without a token: InvalidArgument" 0 "grpc-status 3: etcdserver: user name is empty" \
    grpc $URL etcdserverpb.KV/Range "" /pub/a
expect "Range with a made-up token: Unauthenticated" 0 "grpc-status 16: etcdserver: invalid auth token" \
    grpc $URL etcdserverpb.KV/Range "made.up" /pub/a
expect "Authenticate alice" 0 "grpc-status 0: " grpc $URL etcdserverpb.Auth/Authenticate "" alice apw
tok=$(token_of)
[ -n "$tok" ] || fail "empty token"
ok "simple token issued ($tok)"
expect "Range with alice's token" 0 "grpc-status 0: " grpc $URL etcdserverpb.KV/Range "$tok" /pub/a
expect "Range of secret with alice's token: PermissionDenied" 0 "grpc-status 7: etcdserver: permission denied" \
    grpc $URL etcdserverpb.KV/Range "$tok" secret
# --auth-token-ttl 3: a simple token lives 3 s past its last use (etcd checks once a second).
sleep 2
expect "token used 2 s later" 0 "grpc-status 0: " grpc $URL etcdserverpb.KV/Range "$tok" /pub/a
sleep 2
expect "token used 4 s after issue (> ttl): each use extends it" 0 "grpc-status 0: " \
    grpc $URL etcdserverpb.KV/Range "$tok" /pub/a
sleep 5
expect "token idle 5 s (> ttl 3): expired, Unauthenticated" 0 "grpc-status 16: etcdserver: invalid auth token" \
    grpc $URL etcdserverpb.KV/Range "$tok" /pub/a

echo "== revocation and passwords"
expect "root user revoke-role alice reader" 0 "Role reader is revoked from user alice" $R user revoke-role alice reader
expect "alice get /pub/a denied after the revocation" 1 "$DENIED" $A get /pub/a
expect "user get alice: no roles" 0 $'User: alice\nRoles:' $A user get alice
expect "revoking a role not granted" 1 "Error: etcdserver: role is not granted to the user" $R user revoke-role alice reader
expect "root user grant-role alice reader again" 0 "Role reader is granted to user alice" $R user grant-role alice reader
expect "alice get /pub/a allowed again" 0 $'/pub/a\nva' $A get /pub/a
expect "root role revoke-permission reader /pub/ --prefix" 0 "Permission of range [/pub/, /pub0) is revoked from role reader" \
    $R role revoke-permission reader /pub/ --prefix=true
expect "alice get /pub/a denied after the permission is revoked" 1 "$DENIED" $A get /pub/a
expect "revoking a permission not granted" 1 "Error: etcdserver: permission is not granted to the role" \
    $R role revoke-permission reader nothere
expect "root grants the permission again" 0 "Role reader updated" $R role grant-permission reader read /pub/ --prefix=true
expect "root user passwd alice (--interactive=false, from stdin)" 0 "Password updated" \
    $R user passwd alice --interactive=false < <(echo apw2)
expect "alice's old password fails" 2 "$BADPW" $A get /pub/a
A="$E --user alice:apw2"
expect "alice's new password works" 0 $'/pub/a\nva' $A get /pub/a
expect "root user delete root while auth is on" 1 "Error: etcdserver: invalid auth management" $R user delete root
expect "root role delete root while auth is on" 1 "Error: etcdserver: invalid auth management" $R role delete root
expect "root user revoke-role root root while auth is on" 1 "Error: etcdserver: invalid auth management" \
    $R user revoke-role root root
expect "user delete of a missing user" 1 "Error: etcdserver: user name not found" $R user delete nobody

echo "== kill -9 and restart with the same data dir"
stop
start auth http 21379 21380 --auth-token simple --auth-token-ttl 3
wait_up $R endpoint health
expect "after restart: get without --user" 1 "$NOUSER" $E get /pub/a
expect "after restart: alice's old password fails" 2 "$BADPW" $E --user alice:apw get /pub/a
expect "after restart: alice get /pub/a" 0 $'/pub/a\nva' $A get /pub/a
expect "after restart: alice get secret denied" 1 "$DENIED" $A get secret
expect "after restart: alice put /pub/a denied" 1 "$DENIED" $A put /pub/a v
expect "after restart: root get secret" 0 $'secret\ns3' $R get secret
expect "after restart: user list" 0 $'alice\nroot' $R user list
expect "after restart: role list" 0 $'reader\nroot\nwriter' $R role list
expect "after restart: role get reader" 0 $'Role reader\nKV Read:\n\t[/pub/, /pub0) (prefix /pub/)\nKV Write:' \
    $R role get reader
expect "after restart: user get alice" 0 $'User: alice\nRoles: reader' $R user get alice

echo "== auth disable, enabling without a root user"
expect "root auth disable" 0 "Authentication Disabled" $R auth disable
expect "get without --user after auth disable" 0 $'/pub/a\nva' $E get /pub/a
expect "alice with a wrong password is served while auth is off" 0 $'secret\ns3' $E --user alice:wrong get secret
expect "auth disable again without --user: no error" 0 "Authentication Disabled" $E auth disable
expect "user delete root (auth off)" 0 "User root deleted" $E user delete root
expect "auth enable without a root user" 1 "Error: etcdserver: root user does not exist" $E auth enable
expect "user add root again" 0 "User root created" $E user add root:rootpw
expect "auth enable: the root role survived, so etcdctl's attempt to create it fails" 1 \
    "Error: etcdserver: role name already exists" $E auth enable
expect "user grant-role root root" 0 "Role root is granted to user root" $E user grant-role root root
expect "auth enable" 0 "Authentication Enabled" $E auth enable
expect "alice denied again" 1 "$DENIED" $A get secret
expect "root works again" 0 $'secret\ns3' $R get secret
stop

echo "== JWT tokens: --auth-token jwt,...,sign-method=RS256, 127.0.0.1:21479"
openssl genrsa -out "$work/jwt.key" 2048 2>/dev/null
openssl rsa -in "$work/jwt.key" -pubout -out "$work/jwt.pub" 2>/dev/null
openssl genrsa -out "$work/other.key" 2048 2>/dev/null
start jwt http 21479 21480 --auth-token "jwt,pub-key=$work/jwt.pub,priv-key=$work/jwt.key,sign-method=RS256"
EP=127.0.0.1:21479
URL=http://$EP
E="etcdctl --endpoints=$EP --dial-timeout=2s --command-timeout=5s"
R="$E --user root:rootpw"
A="$E --user alice:apw"
wait_up $E endpoint health
seed_users $E
expect "jwt: auth enable" 0 "Authentication Enabled" $E auth enable
expect "jwt: root put" 0 OK $R put secret s
expect "jwt: root get" 0 $'secret\ns' $R get secret
expect "jwt: root user list" 0 $'alice\nroot' $R user list
expect "jwt: alice get /pub/a --prefix" 0 $'/pub/a\nva' $A get /pub/a --prefix
expect "jwt: alice get secret denied" 1 "$DENIED" $A get secret
expect "jwt: alice put /pub/a denied" 1 "$DENIED" $A put /pub/a v
expect "jwt: wrong password" 2 "$BADPW" $E --user alice:x get /pub/a
expect "jwt: get without --user" 1 "$NOUSER" $E get /pub/a
expect "jwt: Authenticate root" 0 "grpc-status 0: " grpc $URL etcdserverpb.Auth/Authenticate "" root rootpw
tok=$(token_of)
python3 - "$tok" "$work/jwt" <<'PY' || fail "jwt: token $tok"
import base64, json, sys, time
tok, out = sys.argv[1], sys.argv[2]
h, p, s = tok.split(".")
d = lambda x: base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
head, claims = json.loads(d(h)), json.loads(d(p))
assert head == {"alg": "RS256", "typ": "JWT"}, head
assert sorted(claims) == ["exp", "revision", "username"], claims
assert claims["username"] == "root", claims
assert abs(claims["exp"] - (time.time() + 300)) < 10, claims  # default ttl 5m
open(out + ".signed", "w").write(h + "." + p)
open(out + ".sig", "wb").write(d(s))
PY
openssl dgst -sha256 -verify "$work/jwt.pub" -signature "$work/jwt.sig" "$work/jwt.signed" >/dev/null ||
    fail "jwt: the token's RS256 signature does not verify with the public key"
ok "jwt: the token is an RS256 JWT {exp, revision, username: root}, +300 s, signature verified by openssl"
expect "jwt: Range with root's token" 0 "grpc-status 0: " grpc $URL etcdserverpb.KV/Range "$tok" secret
# alice's claims signed with another key, and root's claims with alice's signature.
expect "jwt: Authenticate alice" 0 "grpc-status 0: " grpc $URL etcdserverpb.Auth/Authenticate "" alice apw
atok=$(token_of)
expect "jwt: Range of secret with alice's token: PermissionDenied" 0 "grpc-status 7: etcdserver: permission denied" \
    grpc $URL etcdserverpb.KV/Range "$atok" secret
forged="${tok%.*}.${atok##*.}"
expect "jwt: root's claims with alice's signature: Unauthenticated" 0 "grpc-status 16: etcdserver: invalid auth token" \
    grpc $URL etcdserverpb.KV/Range "$forged" secret
printf '%s' "${tok%.*}" | openssl dgst -sha256 -sign "$work/other.key" -binary >"$work/other.sig"
forged="${tok%.*}.$(base64 -w0 <"$work/other.sig" | tr '+/' '-_' | tr -d '=')"
expect "jwt: root's claims signed by another key: Unauthenticated" 0 "grpc-status 16: etcdserver: invalid auth token" \
    grpc $URL etcdserverpb.KV/Range "$forged" secret
stop

echo "== client certificate CN as the user name: --client-cert-auth, https://127.0.0.1:21579"
ca ca
cert ca server "IP:127.0.0.1,DNS:localhost"
cert ca alice "DNS:alice"
cert ca root "DNS:root"
cert ca mallory "DNS:mallory"
ok "certificates made with openssl (CN=alice, CN=root, CN=mallory)"
start tls https 21579 21580 --cert-file "$pki/server.crt" --key-file "$pki/server.key" \
    --trusted-ca-file "$pki/ca.crt" --client-cert-auth
T="etcdctl --endpoints=https://127.0.0.1:21579 --dial-timeout=2s --command-timeout=5s --cacert $pki/ca.crt"
CA="$T --cert $pki/alice.crt --key $pki/alice.key"
CR="$T --cert $pki/root.crt --key $pki/root.key"
CM="$T --cert $pki/mallory.crt --key $pki/mallory.key"
wait_up $CR endpoint health
seed_users $CR
expect "tls: auth enable" 0 "Authentication Enabled" $CR auth enable
expect "tls: CN=alice get /pub/a --prefix without --user" 0 $'/pub/a\nva' $CA get /pub/a --prefix
expect "tls: CN=alice put secret denied" 1 "$DENIED" $CA put secret v
expect "tls: CN=alice get secret denied" 1 "$DENIED" $CA get secret
expect "tls: CN=alice watch secret canceled" 5 \
    $'watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)\nError: watch is canceled by the server' \
    timeout 5 $CA watch secret
expect "tls: CN=root put secret" 0 OK $CR put secret v
expect "tls: CN=root get secret" 0 $'secret\nv' $CR get secret
expect "tls: CN=root user list" 0 $'alice\nroot' $CR user list
expect "tls: CN=root role add" 0 "Role extra created" $CR role add extra
expect "tls: CN=mallory (no such user) get: permission denied" 1 "$DENIED" $CM get /pub/a
expect_re "tls: CN=mallory endpoint health: healthy" 0 \
    'https://127\.0\.0\.1:21579 is healthy: successfully committed proposal: took = .*' $CM endpoint health
expect "tls: a token wins over the CN (CN=alice, --user root)" 0 OK $CA --user root:rootpw put secret v2
expect "tls: a token wins over the CN (CN=root, --user alice)" 1 "$DENIED" $CR --user alice:apw put secret v3
expect "tls: CN=alice with a wrong --user password" 2 "$BADPW" $CA --user root:bad get secret
expect "tls: CN=root auth disable" 0 "Authentication Disabled" $CR auth disable
expect "tls: CN=mallory get after auth disable" 0 $'secret\nv2' $CM get secret
stop

echo "auth.sh: $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
