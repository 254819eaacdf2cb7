#!/usr/bin/env bash
# keel started exactly as kubeadm starts etcd: the static-pod manifest's command line
# (kubeadm's etcd phase; no ETCD_* variables, kubeadm sets none), with kubeadm-shaped
# certificates made by openssl (a CA; a server certificate for localhost, 127.0.0.1 and
# ::1; a peer certificate; the apiserver-etcd-client and healthcheck-client
# certificates). A real etcd 3.4.23 runs beside it with the same command line: both must
# start, answer `etcdctl endpoint health` over https with the client certificate, and
# answer kubeadm's probe URL on the metrics listener alike. Then keel starts from etcd's
# sample YAML config (adapted to these ports and dirs), from a config with TLS blocks,
# and serves --cors and --host-whitelist as etcd does. Loopback only; ports 7100-7199;
# every process is stopped at exit. Usage: kubeadm.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

# kubeadm's PKI (certs phase): etcd/ca, etcd/server and etcd/peer (both usages, SANs
# the node's names and addresses), etcd/healthcheck-client and apiserver-etcd-client
# (client only; kubeadm puts the healthcheck client in O=system:masters).
ca etcd-ca
cert etcd-ca server "DNS:localhost,IP:127.0.0.1,IP:::1"
cert etcd-ca peer "DNS:localhost,IP:127.0.0.1,IP:::1"
client_cert() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
        -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$pki/$1.ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/etcd-ca.crt" -CAkey "$pki/etcd-ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
client_cert healthcheck-client "/O=system:masters/CN=kube-etcd-healthcheck-client"
client_cert apiserver-etcd-client "/O=system:masters/CN=kube-apiserver-etcd-client"
ok "kubeadm-shaped certificates made with openssl"

# kubeadm_member BINARY NAME CLIENT_PORT PEER_PORT METRICS_PORT: the manifest's command.
kubeadm_member() {
    local bin=$1 name=$2 cp=$3 pp=$4 mp=$5
    "$bin" \
        --advertise-client-urls="https://127.0.0.1:$cp" \
        --cert-file="$pki/server.crt" \
        --client-cert-auth=true \
        --data-dir="$work/$name" \
        --experimental-initial-corrupt-check=true \
        --experimental-watch-progress-notify-interval=5s \
        --initial-advertise-peer-urls="https://127.0.0.1:$pp" \
        --initial-cluster="$name=https://127.0.0.1:$pp" \
        --key-file="$pki/server.key" \
        --listen-client-urls="https://127.0.0.1:$cp,https://[::1]:$cp" \
        --listen-metrics-urls="http://127.0.0.1:$mp" \
        --listen-peer-urls="https://127.0.0.1:$pp" \
        --name="$name" \
        --peer-cert-file="$pki/peer.crt" \
        --peer-client-cert-auth=true \
        --peer-key-file="$pki/peer.key" \
        --peer-trusted-ca-file="$pki/etcd-ca.crt" \
        --snapshot-count=10000 \
        --trusted-ca-file="$pki/etcd-ca.crt" \
        >>"$work/$name.log" 2>&1 &
    pids+=($!)
}

kubeadm_member etcd etcd 7101 7102 7103
kubeadm_member "$KEEL" keel 7111 7112 7113

# What the kube-apiserver and kubeadm's health checks run.
E="etcdctl --cacert $pki/etcd-ca.crt --cert $pki/healthcheck-client.crt --key $pki/healthcheck-client.key --dial-timeout=2s --command-timeout=3s"
for who in etcd:7101 keel:7111; do
    name=${who%%:*} port=${who##*:}
    within 20 $E --endpoints="https://127.0.0.1:$port" endpoint health >/dev/null 2>&1 ||
        fail "$name with kubeadm's command line never became healthy: $($E --endpoints="https://127.0.0.1:$port" endpoint health 2>&1)"
    $E --endpoints="https://[::1]:$port" endpoint health 2>&1 | matches "is healthy" ||
        fail "$name: no health on its second (::1) client URL"
    ok "$name started from kubeadm's command line; etcdctl endpoint health over https on both client URLs"
done
A="etcdctl --cacert $pki/etcd-ca.crt --cert $pki/apiserver-etcd-client.crt --key $pki/apiserver-etcd-client.key --dial-timeout=2s --command-timeout=3s"
$A --endpoints=https://127.0.0.1:7111 put /registry/kubeadm ok | matches -x OK || fail "put as the apiserver's client"
[ "$($A --endpoints=https://[::1]:7111 get /registry/kubeadm --print-value-only)" = ok ] ||
    fail "get as the apiserver's client"
ok "keel serves the apiserver's etcd client certificate"
# Without a client certificate both refuse (--client-cert-auth=true).
for port in 7101 7111; do
    if etcdctl --cacert "$pki/etcd-ca.crt" --dial-timeout=2s --command-timeout=2s \
        --endpoints="https://127.0.0.1:$port" get x >/dev/null 2>&1; then
        fail "port $port served a client without a certificate"
    fi
done
ok "both refuse a client without a certificate"

# kubeadm's probes (kubelet's httpGet on the metrics listener): the same status and
# body from both. /livez and /readyz are not in etcd 3.4.23 (it answers 404), so the
# probe kubeadm writes for etcd 3.4 is /health.
probe() { curl -s -o "$work/body" -w '%{http_code}' "$1" && printf ' ' && cat "$work/body"; }
for path in '/health?exclude=NOSPACE&serializable=true' '/health?serializable=false' '/health'; do
    within 10 sh -c "curl -fs 'http://127.0.0.1:7103$path' >/dev/null" || fail "etcd's metrics listener: $path"
    want=$(probe "http://127.0.0.1:7103$path")
    got=$(probe "http://127.0.0.1:7113$path" || true)
    [ "$got" = "$want" ] || fail "probe $path on the metrics listener: keel '$got', etcd '$want'"
    ok "probe $path on the metrics listener answers as etcd's: $want"
done

# --- etcd's sample config file (etcd.conf.yml.sample of v3.4.23), adapted to this
# script's ports and dirs: the file alone starts keel; flags beside it are ignored.
sample="$here/../tests/data/etcd.conf.yml.sample"
sed -e "s|^data-dir:.*|data-dir: $work/sample|" \
    -e 's|localhost:2380|127.0.0.1:7122|g' -e 's|localhost:2379|127.0.0.1:7121|g' \
    "$sample" >"$work/sample.yml"
"$KEEL" --config-file "$work/sample.yml" --name ignored-flag >>"$work/sample.log" 2>&1 &
pids+=($!)
wait_healthy http://127.0.0.1:7121
run etcdctl --endpoints=http://127.0.0.1:7121 member list
echo "$out" | matches ', started, default, http://127.0.0.1:7122, http://127.0.0.1:7121, false' ||
    fail "member list from the sample config: $out"
matches "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided" "$work/sample.log" ||
    fail "no notice that flags are ignored"
matches -- "--enable-pprof is accepted but ignored" "$work/sample.log" || fail "no pprof warning"
# The sample enables the v2 API.
curl -fsS http://127.0.0.1:7121/v2/keys/sample -XPUT -d value=v2 | matches '"value":"v2"' ||
    fail "v2 API from the sample's enable-v2: true"
ok "keel started from etcd's sample config file (name, URLs, enable-v2 from the file)"

# --- A config file with TLS blocks, kubeadm's certificates.
cat >"$work/tls.yml" <<EOF
name: tls-file
data-dir: $work/tls-file
listen-client-urls: https://127.0.0.1:7131
advertise-client-urls: https://127.0.0.1:7131
listen-peer-urls: https://127.0.0.1:7132
initial-advertise-peer-urls: https://127.0.0.1:7132
initial-cluster: tls-file=https://127.0.0.1:7132
client-transport-security:
  cert-file: $pki/server.crt
  key-file: $pki/server.key
  client-cert-auth: true
  trusted-ca-file: $pki/etcd-ca.crt
peer-transport-security:
  cert-file: $pki/peer.crt
  key-file: $pki/peer.key
  client-cert-auth: true
  trusted-ca-file: $pki/etcd-ca.crt
EOF
"$KEEL" --config-file "$work/tls.yml" >>"$work/tls-file.log" 2>&1 &
pids+=($!)
within 20 $E --endpoints=https://127.0.0.1:7131 endpoint health >/dev/null 2>&1 ||
    fail "keel from a TLS config file never became healthy"
if etcdctl --cacert "$pki/etcd-ca.crt" --dial-timeout=2s --command-timeout=2s \
    --endpoints=https://127.0.0.1:7131 get x >/dev/null 2>&1; then
    fail "the config file's client-cert-auth: true was not applied"
fi
ok "keel started from a config file with client- and peer-transport-security blocks"

# --- --cors and --host-whitelist on the client HTTP endpoints, against etcd's answers.
start_etcd ew 7141 7142 ew=http://127.0.0.1:7142 --host-whitelist=good.example --cors=http://app.example:8080
start_keel kw 7151 7152 kw=http://127.0.0.1:7152 --host-whitelist=good.example --cors=http://app.example:8080
wait_healthy http://127.0.0.1:7141
wait_healthy http://127.0.0.1:7151
# http_answer PORT CURL-ARGS...: status, the CORS headers (lowercased) and the body.
http_answer() {
    local port=$1
    shift
    curl -s -D "$work/headers" -o "$work/body" "$@" "http://127.0.0.1:$port/version" >/dev/null
    head -1 "$work/headers" | tr -d '\r' | cut -d' ' -f2
    # Header names are case-insensitive: Go writes Canonical-Case, hyper lowercase.
    grep -i '^access-control-' "$work/headers" | tr -d '\r' | tr 'A-Z' 'a-z' | sort
    cat "$work/body"
}
for case in "evil host|-H Host:evil.example" \
    "whitelisted host, listed origin|-H Host:good.example:7000 -H Origin:http://app.example:8080" \
    "whitelisted host, other origin|-H Host:good.example -H Origin:http://other.example:80" \
    "preflight|-X OPTIONS -H Host:good.example -H Origin:http://app.example:8080"; do
    what=${case%%|*}
    read -r -a args <<<"${case#*|}"
    want=$(http_answer 7141 "${args[@]}")
    got=$(http_answer 7151 "${args[@]}")
    # /version bodies name each server's own version.
    want=${want//\{\"etcdserver\":*\}/VERSION}
    got=${got//\{\"etcdserver\":*\}/VERSION}
    [ "$got" = "$want" ] || fail "$what: keel answered
$got
etcd answered
$want"
    ok "--host-whitelist/--cors, $what: keel answers as etcd ($(echo "$want" | head -1))"
done
# gRPC never passes through the whitelist.
etcdctl --endpoints=http://127.0.0.1:7151 put k v | matches -x OK || fail "gRPC refused by the host whitelist"
ok "gRPC is not subject to --host-whitelist"

echo "kubeadm: $passed passed, 0 failed"
