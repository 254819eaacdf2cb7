#!/usr/bin/env bash
# --grpc-keepalive-min-time and --enable-grpc-gateway=false, keel and a real etcd 3.4.23
# side by side with identical output required:
#  - a raw HTTP/2 client (h2_pings.py: hand-written frames) pings with and without an open
#    gRPC stream, faster and slower than the minimum: grpc-go's server answers the fourth
#    ping too soon (third strike) with PING ACK, GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
#    naming the last stream, and closes; with no stream open even slow pings are too soon
#    (PermitWithoutStream false); over http://, unix:// and, with
#    --grpc-keepalive-min-time=0, grpc-go's default of five minutes. Over https:// etcd 3.4
#    serves gRPC through Go's HTTP/2 server, which polices nothing: neither does keel.
#  - with the JSON gateway switched off, /v3/... (and /v3beta/...) answer as unknown
#    paths: status, headers and body compared with curl.
# Needs etcd, curl, openssl, python3 and a release build of keel. Every process is
# stopped at exit. Ports 8100-8199. Usage: keepalive.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="$(realpath "${1:-$here/../../target/release/keel}")"
source "$here/lib.sh"

ca ca
cert ca server "IP:127.0.0.1,DNS:localhost"

# member DIR BINARY PORT_BASE FLAGS...: one member running in DIR (unix socket files land
# there) with client URLs http://127.0.0.1:BASE+1, unix://localhost:BASE+3 and
# https://127.0.0.1:BASE+4; peers on BASE+2.
member() {
    local dir=$1 bin=$2 base=$3
    shift 3
    mkdir -p "$dir"
    (cd "$dir" && exec "$bin" --name m --data-dir data \
        --listen-client-urls "http://127.0.0.1:$((base + 1)),unix://localhost:$((base + 3)),https://127.0.0.1:$((base + 4))" \
        --advertise-client-urls "http://127.0.0.1:$((base + 1))" \
        --listen-peer-urls "http://127.0.0.1:$((base + 2))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2))" \
        --initial-cluster "m=http://127.0.0.1:$((base + 2))" \
        --cert-file "$pki/server.crt" --key-file "$pki/server.key" "$@" >>"$dir.log" 2>&1) &
    pids+=($!)
}

# Two pairs: min time 500ms with the gateway off, and min time 0 (grpc-go's 5 minutes).
member "$work/e1" etcd 8100 --grpc-keepalive-min-time=500ms --enable-grpc-gateway=false
member "$work/k1" "$KEEL" 8110 --grpc-keepalive-min-time=500ms --enable-grpc-gateway=false
member "$work/e2" etcd 8120 --grpc-keepalive-min-time=0
member "$work/k2" "$KEEL" 8130 --grpc-keepalive-min-time=0
for p in 8101 8111 8121 8131; do wait_healthy "http://127.0.0.1:$p"; done
ok "etcd and keel up, two of each"

pings() { python3 "$here/h2_pings.py" "$@" 2>&1; }

# same NAME ETCD_ARGS -- KEEL_ARGS -- CLIENT_ARGS...: the client's output against etcd
# and against keel must be equal (and are printed once).
same() {
    local name=$1 e k
    e=$(cd "$work/e${2}" && pings --tcp "127.0.0.1:$3" "${@:5}")
    k=$(cd "$work/k${2}" && pings --tcp "127.0.0.1:$4" "${@:5}")
    if [ "$e" != "$k" ]; then
        diff <(echo "$e") <(echo "$k") >&2 || true
        fail "$name: keel differs from etcd (< etcd, > keel)"
    fi
    echo "$e" | sed 's/^/    /'
    out=$e
}

goaway="GOAWAY code=0xb debug='too_many_pings'"
same "fast pings, no stream" 1 8101 8111 --pings 6 --interval 0.1
echo "$out" | matches -F "after ping 4: $goaway last_stream=0" || fail "no GOAWAY"
ok "pings 100ms apart with no stream: GOAWAY too_many_pings after the fourth, as etcd"
same "fast pings, one stream" 1 8101 8111 --stream --pings 6 --interval 0.1
echo "$out" | matches -F "after ping 4: $goaway last_stream=1" || fail "no GOAWAY"
ok "pings 100ms apart with a stream open: GOAWAY naming stream 1, as etcd"
same "slow pings, one stream" 1 8101 8111 --stream --pings 5 --interval 0.7
echo "$out" | matches -x "connection kept" || fail "connection not kept"
ok "pings 700ms apart (min 500ms) with a stream open: connection kept, as etcd"
same "slow pings, no stream" 1 8101 8111 --pings 5 --interval 0.7
echo "$out" | matches -F "after ping 4: $goaway last_stream=0" || fail "no GOAWAY"
ok "pings 700ms apart with no stream: GOAWAY (two hours without a stream), as etcd"

e=$(cd "$work/e1" && pings --unix localhost:8103 --stream --pings 6 --interval 0.1)
k=$(cd "$work/k1" && pings --unix localhost:8113 --stream --pings 6 --interval 0.1)
[ "$e" = "$k" ] || { diff <(echo "$e") <(echo "$k") >&2; fail "unix socket: keel differs from etcd"; }
echo "$e" | matches -F "$goaway" || fail "no GOAWAY on the unix socket"
ok "over unix://: the same GOAWAY, as etcd"

same "tls, fast pings" 1 8104 8114 --tls "$pki/ca.crt" --stream --pings 6 --interval 0.1
echo "$out" | matches -x "connection kept" || fail "TLS connection not kept"
same "tls, fast pings, no stream" 1 8104 8114 --tls "$pki/ca.crt" --pings 6 --interval 0.1
ok "over https://: no policing (Go's HTTP/2 server serves etcd's TLS gRPC), as etcd"

same "min time 0" 2 8121 8131 --stream --pings 5 --interval 0.7
echo "$out" | matches -F "$goaway" || fail "no GOAWAY with min time 0"
ok "--grpc-keepalive-min-time=0: grpc-go's 5 minutes apply, pings 700ms apart are sent away, as etcd"

# A normal gRPC client (etcdctl) is not sent away, and HTTP/1 on the same port is untouched.
for p in 8111 8131; do
    etcdctl --endpoints "http://127.0.0.1:$p" put k v >/dev/null || fail "etcdctl put on $p"
done
ok "etcdctl served by keel under both settings"

# The gateway switched off: /v3/ paths are unknown, as in etcd. Headers compared by name
# (lowercased, sorted), without Date.
http_answer() { # URL [curl args...]
    local url=$1
    shift
    curl -sS -i "$@" "$url" | tr -d '\r' | awk 'BEGIN{h=1} h&&/^$/{h=0; print "--"; next} {print}' >"$work/answer"
    {
        head -1 "$work/answer"
        sed -n '2,/^--$/p' "$work/answer" | grep -v '^--$' | grep -iv '^date:' | awk -F': ' '{print tolower($1)": "$2}' | sort
        sed -n '/^--$/,$p' "$work/answer"
    }
}
for req in "POST /v3/kv/range" "POST /v3beta/kv/range" "POST /v3/kv/put" "POST /v3/watch" \
    "POST /v3/maintenance/status" "POST /v3/lease/grant" "POST /v3/lock/lock" "GET /v3/kv/range" \
    "POST /v3/" "OPTIONS /v3/kv/range"; do
    method=${req% *} path=${req#* }
    e=$(http_answer "http://127.0.0.1:8101$path" -X "$method" -d '{"key":"aw=="}')
    k=$(http_answer "http://127.0.0.1:8111$path" -X "$method" -d '{"key":"aw=="}')
    if [ "$e" != "$k" ]; then
        diff <(echo "$e") <(echo "$k") >&2 || true
        fail "$req with the gateway off: keel differs from etcd (< etcd, > keel)"
    fi
done
echo "$e" | sed 's/^/    /'
e=$(http_answer "http://127.0.0.1:8101/v3/kv/range" -X POST -d '{"key":"aw=="}')
echo "$e" | matches -x "HTTP/1.1 404 Not Found" || fail "the gateway answered though switched off"
ok "--enable-grpc-gateway=false: /v3/ and /v3beta/ paths answered as etcd answers them (404 page not found)"
# With the gateway on (the default, pair 2) the same request is served.
curl -sS -X POST -d '{"key":"aw=="}' http://127.0.0.1:8131/v3/kv/range | matches '"header"' ||
    fail "the gateway is not served by default"
ok "the gateway is served by default"

echo "$passed passed, 0 failed"
