#!/usr/bin/env bash
# `etcdctl snapshot save` against keel and etcd 3.4 holding the same keyspace, both up at
# once (one member each, on loopback), runs alternating: wall time of the save, the
# server's resident memory before and at its peak during the save (sampled every 20 ms),
# and the latency of linearizable gets running beside it, with and without a save.
# Not a test: figures depend on the machine. Usage: snapshot.sh [--keys N] [--rounds N]
# (needs etcd 3.4: apt-get install etcd-server etcd-client)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
KEYS=1000000
ROUNDS=3
while [ $# -gt 0 ]; do
    case $1 in
        --keys) KEYS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --quiet --release -p keel-server --bin keel --bin keelctl --manifest-path "$root/Cargo.toml"
KEEL="$root/target/release/keel"
KEELCTL="$root/target/release/keelctl"
work="$(mktemp -d -p "${TMPDIR:-/var/tmp}")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export ETCDCTL_API=3

start() { # BINARY NAME CLIENT_PORT PEER_PORT
    "$1" --name "$2" --data-dir "$work/$2" --listen-client-urls "http://127.0.0.1:$3" \
        --advertise-client-urls "http://127.0.0.1:$3" --listen-peer-urls "http://127.0.0.1:$4" \
        --initial-advertise-peer-urls "http://127.0.0.1:$4" --initial-cluster "$2=http://127.0.0.1:$4" \
        --quota-backend-bytes 8589934592 >"$work/$2.log" 2>&1 &
    pids+=($!)
    eval "pid_$2=$!"
    for _ in $(seq 100); do
        etcdctl --endpoints="127.0.0.1:$3" endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$2 did not start" >&2
    exit 1
}
start "$KEEL" keel 17379 17380
start etcd etcd 17479 17480

for port in 17379 17479; do
    echo "loading $KEYS keys (100-byte values) into 127.0.0.1:$port"
    "$KEELCTL" bench put --endpoints "127.0.0.1:$port" --conns 4 --clients 64 --total "$KEYS" \
        --key-space-size "$KEYS" --sequential-keys --key-size 16 --val-size 100 | grep -E "Requests/sec" || true
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# save NAME PORT PID: one snapshot save; prints seconds, RSS before and peak (MiB), size.
save() {
    local before peak f="$work/$1.db"
    rm -f "$f"
    before=$(rss "$3")
    peak=$before
    local t0 t1
    t0=$(date +%s.%N)
    etcdctl --endpoints="127.0.0.1:$2" --command-timeout=600s snapshot save "$f" >/dev/null 2>&1 &
    local sp=$!
    while kill -0 "$sp" 2>/dev/null; do
        local r
        r=$(rss "$3")
        [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.02
    done
    wait "$sp"
    t1=$(date +%s.%N)
    printf "%-5s save %6.2f s  rss before %5d MiB  peak %5d MiB (+%d)  file %d MB\n" "$1" \
        "$(echo "$t1 - $t0" | bc)" $((before / 1024)) $((peak / 1024)) $(((peak - before) / 1024)) \
        $(($(stat -c %s "$f") / 1000000))
}

# gets PORT: 20000 linearizable gets of one key from 16 clients; prints the latency line.
gets() {
    "$KEELCTL" bench range --endpoints "127.0.0.1:$1" --conns 2 --clients 16 --total 20000 \
        --consistency l key | grep -E "Requests/sec|Slowest|99%|99.9%" | sed -E 's/ +/ /g' | tr '\n' ' '
    echo
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round"
    if [ $((round % 2)) = 1 ]; then order="keel etcd"; else order="etcd keel"; fi
    for sys in $order; do
        if [ "$sys" = keel ]; then port=17379; pid=$pid_keel; else port=17479; pid=$pid_etcd; fi
        save "$sys" "$port" "$pid"
        # keel logs how long the member task spent copying its index (the only part of a
        # save that runs on it) and how long writing the database took.
        if [ "$sys" = keel ]; then grep -o 'sent database snapshot.*' "$work/keel.log" | tail -1 || true; fi
        echo -n "$sys gets, quiet:       "; gets "$port"
        etcdctl --endpoints="127.0.0.1:$port" --command-timeout=600s snapshot save "$work/bg.db" >/dev/null 2>&1 &
        bgsave=$!
        echo -n "$sys gets, during save: "; gets "$port"
        wait "$bgsave" || true
    done
done
