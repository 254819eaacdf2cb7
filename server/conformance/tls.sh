#!/usr/bin/env bash
# TLS on both listeners, as an operator sets it up: a CA and certificates made with
# openssl (SANs 127.0.0.1 and localhost), a 3-member keel cluster with https client and
# peer URLs, --client-cert-auth and --peer-client-cert-auth. etcdctl with the CA and a
# client certificate gets endpoint health, member list, put and get; without a client
# certificate, or trusting another CA, it is refused. A certificate that does not name
# the advertised host is refused at start. Needs etcdctl, openssl and a release build of
# keel. Loopback only; every process is stopped at exit. Usage: tls.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

ca ca
ca other-ca
cert ca server "IP:127.0.0.1,DNS:localhost"
cert ca client "DNS:client"
cert other-ca stranger "DNS:client"
cert ca elsewhere "DNS:elsewhere.example"
ok "certificates made with openssl"

TLS=(--cert-file "$pki/server.crt" --key-file "$pki/server.key"
    --trusted-ca-file "$pki/ca.crt" --client-cert-auth
    --peer-cert-file "$pki/server.crt" --peer-key-file "$pki/server.key"
    --peer-trusted-ca-file "$pki/ca.crt" --peer-client-cert-auth)

# start_tls NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [extra flags...]
start_tls() {
    local name=$1 cp=$2 pp=$3 ic=$4
    shift 4
    start_keel_tls "$name" "$cp" "$pp" "$ic" "${TLS[@]}" "$@"
}

# A certificate that does not name the advertised host: refused at start, one line.
out=$("$KEEL" --name bad --data-dir "$work/bad" \
    --listen-client-urls https://127.0.0.1:23579 --advertise-client-urls https://127.0.0.1:23579 \
    --cert-file "$pki/elsewhere.crt" --key-file "$pki/elsewhere.key" \
    --listen-peer-urls http://127.0.0.1:23580 --initial-advertise-peer-urls http://127.0.0.1:23580 \
    --initial-cluster bad=http://127.0.0.1:23580 2>&1) && fail "a certificate for the wrong host was accepted"
echo "$out" | matches "certificate is valid for elsewhere.example, not 127.0.0.1" ||
    fail "wrong-host refusal: $out"
ok "start refused for a certificate not covering the advertised host"
out=$("$KEEL" --name bad --data-dir "$work/bad" \
    --listen-client-urls https://127.0.0.1:23579 --advertise-client-urls https://127.0.0.1:23579 \
    --listen-peer-urls http://127.0.0.1:23580 --initial-advertise-peer-urls http://127.0.0.1:23580 \
    --initial-cluster bad=http://127.0.0.1:23580 2>&1) && fail "https without certificates was accepted"
echo "$out" | matches "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:23579 with HTTPS scheme" ||
    fail "https without certificates: $out"
ok "start refused for https without certificates"

IC="t1=https://127.0.0.1:23380,t2=https://127.0.0.1:24380,t3=https://127.0.0.1:25380"
start_tls t1 23379 23380 "$IC"
start_tls t2 24379 24380 "$IC"
start_tls t3 25379 25380 "$IC"
EPS="https://127.0.0.1:23379,https://127.0.0.1:24379,https://127.0.0.1:25379"
E="etcdctl --cacert $pki/ca.crt --cert $pki/client.crt --key $pki/client.key --dial-timeout=2s --command-timeout=5s"
deadline=$((SECONDS + 20))
until $E --endpoints="$EPS" endpoint health >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "the TLS cluster never became healthy: $($E --endpoints="$EPS" endpoint health 2>&1)"
    sleep 0.2
done
ok "endpoint health over TLS on all 3 members"
members=$($E --endpoints="$EPS" member list)
[ "$(echo "$members" | grep -c ', started, t[123], https://127.0.0.1:2[345]380, https://127.0.0.1:2[345]379, false')" = 3 ] ||
    fail "member list: $members"
ok "member list shows https peer and client URLs"
$E --endpoints=https://127.0.0.1:23379 put tls-key tls-value | matches -x OK || fail "put over TLS"
[ "$($E --endpoints=https://127.0.0.1:25379 get tls-key --print-value-only)" = tls-value ] ||
    fail "get over TLS from another member"
ok "put on one member, linearizable get from another"
curl -fsS --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" \
    https://127.0.0.1:24379/health | matches '"health":"true"' || fail "/health over TLS"
ok "/health over TLS with curl"

# Refusals: no client certificate, a certificate from another CA, a client that does
# not trust the server's CA, plain http on the https port.
N="etcdctl --dial-timeout=2s --command-timeout=3s --endpoints=https://127.0.0.1:23379"
if $N --cacert "$pki/ca.crt" endpoint health >/dev/null 2>&1; then fail "a client without a certificate was served"; fi
if $N --cacert "$pki/ca.crt" put x y >/dev/null 2>&1; then fail "a client without a certificate could write"; fi
ok "etcdctl without --cert/--key is refused"
if $N --cacert "$pki/ca.crt" --cert "$pki/stranger.crt" --key "$pki/stranger.key" endpoint health >/dev/null 2>&1; then
    fail "a client certificate from another CA was accepted"
fi
ok "a client certificate from another CA is refused"
if $N --cacert "$pki/other-ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" endpoint health >/dev/null 2>&1; then
    fail "a client trusting another CA reached the member"
fi
ok "a client that does not trust the member's CA fails"
if etcdctl --dial-timeout=2s --command-timeout=3s --endpoints=http://127.0.0.1:23379 endpoint health >/dev/null 2>&1; then
    fail "plain http was served on the https port"
fi
ok "plain http on the https port fails"

echo "tls.sh: all $passed checks passed"
