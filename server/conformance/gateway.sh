#!/usr/bin/env bash
# etcd's JSON gateway, side by side: a real etcd 3.4.23 and keel (one member each) take
# the same curl requests — KV, txn, leases with a keepalive stream, watches, members,
# maintenance, snapshot, election, lock, auth with tokens, and the errors — over http and
# then https, and must answer with the same HTTP status and JSON once IDs, tokens, ports
# and sizes are named (gateway_compare.py). Then a real gateway client, Debian's
# python3-etcd3gw, runs its own functional test suite against each (it needs
# 127.0.0.1:2379, and the /v3/ path that etcd 3.4 serves: its default, /v3alpha/, is
# gone since 3.4).
#
# Usage: gateway.sh KEEL_BINARY. Needs etcd, curl, openssl, Debian's python3 with
# python3-etcd3gw, python3-oslotest and python3-testtools (.ci/run installs them).
set -euo pipefail
KEEL=$(realpath "$1")
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
py=/usr/bin/python3 # Debian's: the packages above live in its dist-packages

# pair SCHEME TAG [flags...]: etcd on 5101/5102 and keel on 5111/5112, both named gw.
pair() {
    local s=$1 tag=$2
    shift 2
    start_member etcd "$s" gw 5101 5102 "gw=$s://127.0.0.1:5102" --data-dir "$work/etcd-$tag" "$@"
    etcd_pid=$pid_gw
    start_member "$KEEL" "$s" gw 5111 5112 "gw=$s://127.0.0.1:5112" --data-dir "$work/keel-$tag" "$@"
    keel_pid=$pid_gw
}
stop_pair() {
    kill "$etcd_pid" "$keel_pid" 2>/dev/null || true
    wait "$etcd_pid" "$keel_pid" 2>/dev/null || true
}
healthy() { curl -fsS "${@:2}" "$1/health" 2>/dev/null | matches '"health":"true"'; }

pair http plain
within 20 healthy http://127.0.0.1:5101 || fail "etcd never became healthy"
within 20 healthy http://127.0.0.1:5111 || fail "keel never became healthy"
"$py" "$here/gateway_compare.py" http://127.0.0.1:5101 http://127.0.0.1:5111 || fail "gateway answers differ (http)"
ok "JSON gateway over http: every answer as etcd 3.4.23's"
stop_pair

ca gwca
cert gwca gwserver "IP:127.0.0.1,DNS:localhost"
tls=(--cert-file "$pki/gwserver.crt" --key-file "$pki/gwserver.key"
    --peer-cert-file "$pki/gwserver.crt" --peer-key-file "$pki/gwserver.key"
    --peer-trusted-ca-file "$pki/gwca.crt")
pair https tls "${tls[@]}"
within 20 healthy https://127.0.0.1:5101 --cacert "$pki/gwca.crt" || fail "etcd (TLS) never became healthy"
within 20 healthy https://127.0.0.1:5111 --cacert "$pki/gwca.crt" || fail "keel (TLS) never became healthy"
"$py" "$here/gateway_compare.py" https://127.0.0.1:5101 https://127.0.0.1:5111 "$pki/gwca.crt" \
    || fail "gateway answers differ (https)"
ok "JSON gateway over https: every answer as etcd 3.4.23's"
stop_pair

# etcd3gw's own functional suite (22 tests: status, members, keys, prefixes, sort orders,
# replace, leases with keys, watches, locks, create). Its tests skip themselves when
# nothing answers on 127.0.0.1:2379; the runner counts a skip as a failure.
etcd3gw_suite() { # BINARY NAME
    start_member "$1" http "$2" 2379 5122 "$2=http://127.0.0.1:5122" --data-dir "$work/etcd3gw-$2"
    local p
    p=$(eval echo "\$pid_$2")
    within 20 healthy http://127.0.0.1:2379 || fail "$2 on 2379 never became healthy"
    run timeout 300 "$py" "$here/etcd3gw_suite.py" /v3/
    kill "$p"
    wait "$p" 2>/dev/null || true
    [ "$rc" = 0 ] || fail "etcd3gw's suite against $2: $out"
    ok "python3-etcd3gw's own test suite against $2: $(echo "$out" | tail -1)"
}
etcd3gw_suite etcd etcd
etcd3gw_suite "$KEEL" keel
echo "$passed gateway checks passed"
