# Fixed ports in these scripts stay below 32768, outside Linux's ephemeral range, so an
# outgoing connection can never hold a port a member is about to listen on.
#
# Shared by the conformance scripts: a scratch dir, process cleanup at exit, pass/fail
# reporting, health waits and starting keel members on loopback. Source it after
# setting KEEL (the keel binary) and `here`.
export ETCDCTL_API=3
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    # The last lines of every process log, so a CI failure can be diagnosed from its output.
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
    exit 1
}
passed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }

# within SECONDS CMD...: true once CMD succeeds, polled every 0.1 s for at most SECONDS.
within() {
    local deadline=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt $deadline ]; do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}

wait_healthy() { # endpoint [seconds]: bounded by wall time (one probe can take 2 s)
    local deadline=$((SECONDS + ${2:-15}))
    while [ $SECONDS -lt $deadline ]; do
        if etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=1s endpoint health >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    fail "$1 never became healthy"
}

# start_member BINARY SCHEME NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [flags...]: one
# member on loopback with SCHEME client and peer URLs, logging to $work/NAME.log; its PID
# in $pid_NAME.
start_member() {
    local bin=$1 s=$2 name=$3 cp=$4 pp=$5 ic=$6
    shift 6
    "$bin" --name "$name" --data-dir "$work/$name" \
        --listen-client-urls "$s://127.0.0.1:$cp" --advertise-client-urls "$s://127.0.0.1:$cp" \
        --listen-peer-urls "$s://127.0.0.1:$pp" --initial-advertise-peer-urls "$s://127.0.0.1:$pp" \
        --initial-cluster "$ic" --heartbeat-interval 50 --election-timeout 500 "$@" \
        >>"$work/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_$name=$!"
}

# start_keel NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [extra flags...]
start_keel() { start_member "$KEEL" http "$@"; }

# start_keel_tls NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [flags...]: https client and
# peer URLs; the certificate flags come with the other flags.
start_keel_tls() { start_member "$KEEL" https "$@"; }

# start_etcd NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [extra flags...]: a real etcd.
start_etcd() { start_member etcd http "$@"; }

# run CMD...: stdout and stderr merged, without the client library's JSON log lines
# ({"level":"warn",...}, which name random client IDs); sets $out and $rc.
run() {
    set +e
    "$@" >"$work/out" 2>&1
    rc=$?
    set -e
    out=$(grep -av '^{"level":' "$work/out" || true)
}

# Test certificates (openssl, P-256), in $work/pki.
pki="$work/pki"
mkdir -p "$pki"
# ca NAME: a self-signed CA.
ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$1" -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>/dev/null
}
# cert CA NAME SANS: a certificate with CN=NAME signed by CA, for servers and clients alike.
cert() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$pki/$2.key" -out "$pki/$2.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$pki/$2.ext"
    openssl x509 -req -in "$pki/$2.csr" -CA "$pki/$1.crt" -CAkey "$pki/$1.key" -CAcreateserial \
        -days 2 -extfile "$pki/$2.ext" -out "$pki/$2.crt" 2>/dev/null
}

# matches GREP-ARGS...: grep that reads all of its input. `cmd | grep -q` exits at the
# first match, and a cmd still writing (etcdctl prints a table line by line) then dies
# of SIGPIPE, which `set -o pipefail` turns into a failed check at random.
matches() { grep "$@" >/dev/null; }
