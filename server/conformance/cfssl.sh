#!/usr/bin/env bash
# TLS with certificates from cfssl, made the way etcd's classic TLS guide ("Generate
# self-signed certificates", linked from etcd's security docs) makes them: ca-config.json
# with server, client and peer profiles, an RSA 2048 CA from ca-csr.json, an ECDSA P-256
# server certificate (server auth only) for the client listeners, one ECDSA P-256 peer
# certificate per member (server and client auth) for the peer listeners, and an RSA 2048
# client certificate with "hosts": [""] (an empty DNS SAN, as the guide's one-liner makes).
# A 3-member cluster with https client and peer URLs, --client-cert-auth and
# --peer-client-cert-auth: etcdctl with the CA and the client certificate gets endpoint
# health, member list, put and get; without a client certificate, with one from another
# cfssl CA, or with the server certificate (no client auth usage) it is refused.
#
# Members on loopback 20379/20380, 20479/20480, 20579/20580; no other conformance script
# uses 20xxx. Every process is stopped at exit. Needs etcdctl 3.4, openssl and cfssl +
# cfssljson (Debian golang-cfssl, installed here when running as root).
#
# Usage: cfssl.sh [path/to/server]  or  KEEL=path/to/server cfssl.sh
#   default: target/debug/keel. The same flags are valid for etcd 3.4, so
#   KEEL=$(command -v etcd) bash server/conformance/cfssl.sh checks the script itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-${KEEL:-$here/../../target/debug/keel}}"
[ -x "$KEEL" ] || { echo "cfssl.sh: no server binary at $KEEL" >&2; exit 1; }
if ! command -v cfssl >/dev/null || ! command -v cfssljson >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-cfssl >/dev/null
    else
        echo "cfssl.sh: cfssl and cfssljson are missing (apt-get install golang-cfssl) and this user cannot install them" >&2
        exit 1
    fi
fi
source "$here/lib.sh"
started=$SECONDS

top=$PWD
cd "$pki"
# cfssl logs to stderr; keep it for diagnosis, out of the way of cfssljson's stdin.
cat >ca-config.json <<'EOF'
{
    "signing": {
        "default": {
            "expiry": "43800h"
        },
        "profiles": {
            "server": {
                "expiry": "43800h",
                "usages": [
                    "signing",
                    "key encipherment",
                    "server auth"
                ]
            },
            "client": {
                "expiry": "43800h",
                "usages": [
                    "signing",
                    "key encipherment",
                    "client auth"
                ]
            },
            "peer": {
                "expiry": "43800h",
                "usages": [
                    "signing",
                    "key encipherment",
                    "server auth",
                    "client auth"
                ]
            }
        }
    }
}
EOF
cat >ca-csr.json <<'EOF'
{
    "CN": "Keel conformance CA",
    "key": {
        "algo": "rsa",
        "size": 2048
    },
    "names": [
        {
            "C": "US",
            "L": "San Francisco",
            "O": "Keel",
            "OU": "Conformance",
            "ST": "California"
        }
    ]
}
EOF
cat >server.json <<'EOF'
{
    "CN": "server",
    "hosts": [
        "127.0.0.1",
        "localhost"
    ],
    "key": {
        "algo": "ecdsa",
        "size": 256
    },
    "names": [
        {
            "C": "US",
            "L": "San Francisco",
            "ST": "California"
        }
    ]
}
EOF
for m in member1 member2 member3; do
    sed "s/\"CN\": \"server\"/\"CN\": \"$m\"/" server.json >"$m.json"
done
echo '{"CN":"client","hosts":[""],"key":{"algo":"rsa","size":2048}}' >client.json
# The CA of another operator, and a client certificate it signed.
sed 's/Keel conformance CA/Another CA/' ca-csr.json >other-ca-csr.json

gen() { # cfssl ARGS... | cfssljson -bare NAME (the last argument)
    local name=${*: -1}
    cfssl "${@:1:$#-1}" 2>>cfssl.log | cfssljson -bare "$name" 2>>cfssl.log ||
        fail "cfssl ${*:1:$#-1}: $(tail -3 cfssl.log)"
    [ -s "$name.pem" ] && [ -s "$name-key.pem" ] || fail "cfssl made no $name.pem: $(tail -3 cfssl.log)"
}
SIGN=(gencert -ca=ca.pem -ca-key=ca-key.pem -config=ca-config.json)
gen gencert -initca ca-csr.json ca
gen "${SIGN[@]}" -profile=server server.json server
for m in member1 member2 member3; do gen "${SIGN[@]}" -profile=peer "$m.json" "$m"; done
gen "${SIGN[@]}" -profile=client client.json client
gen gencert -initca other-ca-csr.json other-ca
gen gencert -ca=other-ca.pem -ca-key=other-ca-key.pem -config=ca-config.json -profile=client client.json stranger
cd "$top"
ok "certificates made with cfssl $(cfssl version | sed -n 's/^Version: //p') (CA, server, 3 peers, client, another CA's client)"

# What the profiles put in the certificates, as the guide intends.
eku() { openssl x509 -in "$pki/$1.pem" -noout -ext extendedKeyUsage,subjectAltName 2>/dev/null | sed 's/^ *//; s/ *$//' | paste -sd' '; }
[ "$(eku server)" = "X509v3 Extended Key Usage: TLS Web Server Authentication X509v3 Subject Alternative Name: DNS:localhost, IP Address:127.0.0.1" ] ||
    fail "server.pem: $(eku server)"
[ "$(eku member2)" = "X509v3 Extended Key Usage: TLS Web Server Authentication, TLS Web Client Authentication X509v3 Subject Alternative Name: DNS:localhost, IP Address:127.0.0.1" ] ||
    fail "member2.pem: $(eku member2)"
[ "$(eku client)" = "X509v3 Extended Key Usage: TLS Web Client Authentication X509v3 Subject Alternative Name: DNS:" ] ||
    fail "client.pem: $(eku client)"
ok "server: server auth; peers: server and client auth; client: client auth and an empty DNS SAN"

# start NAME CLIENT_PORT PEER_PORT: one member, https on both listeners, its own peer
# certificate, the shared server certificate on the client listener.
IC="member1=https://127.0.0.1:20380,member2=https://127.0.0.1:20480,member3=https://127.0.0.1:20580"
start() {
    local name=$1 cp=$2 pp=$3
    "$KEEL" --name "$name" --data-dir "$work/$name" \
        --listen-client-urls "https://127.0.0.1:$cp" --advertise-client-urls "https://127.0.0.1:$cp" \
        --listen-peer-urls "https://127.0.0.1:$pp" --initial-advertise-peer-urls "https://127.0.0.1:$pp" \
        --initial-cluster "$IC" --initial-cluster-token cfssl-conformance --initial-cluster-state new \
        --heartbeat-interval 50 --election-timeout 500 \
        --cert-file "$pki/server.pem" --key-file "$pki/server-key.pem" \
        --trusted-ca-file "$pki/ca.pem" --client-cert-auth \
        --peer-cert-file "$pki/$name.pem" --peer-key-file "$pki/$name-key.pem" \
        --peer-trusted-ca-file "$pki/ca.pem" --peer-client-cert-auth \
        >>"$work/$name.log" 2>&1 &
    pids+=($!)
}
start member1 20379 20380
start member2 20479 20480
start member3 20579 20580

EPS="https://127.0.0.1:20379,https://127.0.0.1:20479,https://127.0.0.1:20579"
E="etcdctl --dial-timeout=2s --command-timeout=5s --cacert $pki/ca.pem --cert $pki/client.pem --key $pki/client-key.pem"
deadline=$((SECONDS + 20))
until $E --endpoints="$EPS" endpoint health >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "the TLS cluster never became healthy: $($E --endpoints="$EPS" endpoint health 2>&1 | grep -v '^{"level"')"
    sleep 0.2
done
run $E --endpoints="$EPS" endpoint health
health=$(echo "$out" | sed 's/took = .*/took = T/' | sort)
[ "$rc" = 0 ] && [ "$health" = "https://127.0.0.1:20379 is healthy: successfully committed proposal: took = T
https://127.0.0.1:20479 is healthy: successfully committed proposal: took = T
https://127.0.0.1:20579 is healthy: successfully committed proposal: took = T" ] || fail "endpoint health (exit $rc): $out"
ok "endpoint health: 3 healthy members"

run $E --endpoints="$EPS" member list
members=$(echo "$out" | sed 's/^[0-9a-f]\+, /ID, /' | sort -t, -k3)
[ "$rc" = 0 ] && [ "$members" = "ID, started, member1, https://127.0.0.1:20380, https://127.0.0.1:20379, false
ID, started, member2, https://127.0.0.1:20480, https://127.0.0.1:20479, false
ID, started, member3, https://127.0.0.1:20580, https://127.0.0.1:20579, false" ] ||
    fail "member list (exit $rc): $out"
ok "member list: 3 started members with https peer and client URLs"

run $E --endpoints=https://127.0.0.1:20379 put cfssl-key cfssl-value
[ "$rc" = 0 ] && [ "$out" = OK ] || fail "put through member1 (exit $rc): $out"
run $E --endpoints=https://127.0.0.1:20579 get cfssl-key
[ "$rc" = 0 ] && [ "$out" = $'cfssl-key\ncfssl-value' ] || fail "get through member3 (exit $rc): $out"
run $E --endpoints=https://127.0.0.1:20479 get cfssl-key --consistency=s --print-value-only
[ "$rc" = 0 ] && [ "$out" = cfssl-value ] || fail "serializable get through member2 (exit $rc): $out"
ok "put through member1, get through member3 and member2"

# Refusals: each must exit non-zero and print nothing that looks like success.
refused() { # WHAT CMD...
    local what=$1
    shift
    run "$@"
    [ "$rc" != 0 ] || fail "$what: exit 0: $out"
    if echo "$out" | matches -E 'is healthy|^OK$|started'; then fail "$what: $out"; fi
}
N="etcdctl --dial-timeout=2s --command-timeout=3s --endpoints=https://127.0.0.1:20379 --cacert $pki/ca.pem"
refused "endpoint health without a client certificate" $N endpoint health
refused "member list without a client certificate" $N member list
refused "put without a client certificate" $N put x y
ok "without --cert/--key: endpoint health, member list and put fail"
refused "a client certificate from another cfssl CA" $N --cert "$pki/stranger.pem" --key "$pki/stranger-key.pem" endpoint health
ok "a client certificate from another cfssl CA is refused"
refused "the server certificate (no client auth usage) as a client certificate" \
    $N --cert "$pki/server.pem" --key "$pki/server-key.pem" endpoint health
ok "the server profile's certificate (server auth only) is refused as a client certificate"
refused "a client trusting another CA" etcdctl --dial-timeout=2s --command-timeout=3s \
    --endpoints=https://127.0.0.1:20479 --cacert "$pki/other-ca.pem" --cert "$pki/client.pem" \
    --key "$pki/client-key.pem" endpoint health
ok "a client that trusts only another CA fails"
# The cluster is still whole after the refused connections.
run $E --endpoints="$EPS" endpoint health
[ "$rc" = 0 ] && [ "$(echo "$out" | grep -c ' is healthy: ')" = 3 ] || fail "endpoint health afterwards (exit $rc): $out"
ok "all 3 members still healthy"

echo "cfssl.sh: $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
