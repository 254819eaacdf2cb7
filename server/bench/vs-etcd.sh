#!/usr/bin/env bash
# Keel vs etcd, side by side in one run: a 3-member cluster of each on loopback, the
# same `keelctl bench` workloads against each, and a table of keel/etcd ratios. Not a
# test: figures depend on the machine; run it on a quiet one and compare ratios.
# Usage: vs-etcd.sh [--total N] [--rss-keys N]   (needs etcd 3.4: apt-get install etcd-server)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
TOTAL=20000
RSS_KEYS=1000000
while [ $# -gt 0 ]; do
    case $1 in
        --total) TOTAL=$2; shift 2 ;;
        --rss-keys) RSS_KEYS=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --quiet --release -p keel-server --bin keel --bin keelctl --manifest-path "$root/Cargo.toml"
KEEL="$root/target/release/keel"
KEELCTL="$root/target/release/keelctl"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# cluster BINARY PREFIX BASEPORT: three members on BASEPORT+{1,2,3}{379,380}
cluster() {
    local bin=$1 prefix=$2 base=$3 ic="" i
    for i in 1 2 3; do ic+="${ic:+,}$prefix$i=http://127.0.0.1:$((base + i * 1000 + 380))"; done
    for i in 1 2 3; do
        local cp=$((base + i * 1000 + 379)) pp=$((base + i * 1000 + 380))
        "$bin" --name "$prefix$i" --data-dir "$work/$prefix$i" \
            --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
            --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
            --initial-cluster "$ic" --initial-cluster-token "bench-$prefix" >"$work/$prefix$i.log" 2>&1 &
        pids+=($!)
        eval "pids_$prefix+=($!)"
    done
    for i in 1 2 3; do
        for _ in $(seq 1 100); do
            etcdctl --endpoints="127.0.0.1:$((base + i * 1000 + 379))" endpoint health >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
}
pids_keel=()
pids_etcd=()
cluster "$(command -v etcd)" etcd 40000
cluster "$KEEL" keel 50000
EP_etcd="127.0.0.1:41379,127.0.0.1:42379,127.0.0.1:43379"
EP_keel="127.0.0.1:51379,127.0.0.1:52379,127.0.0.1:53379"

# run NAME ARGS...: the RESULT line's fields for both systems
results="$work/results"
: >"$results"
run() {
    local label=$1
    shift
    for sys in etcd keel; do
        eval "local eps=\$EP_$sys"
        local line
        line=$("$KEELCTL" bench "$@" --endpoints "$eps" | grep '^RESULT' || echo "RESULT qps=0 p99_ms=0 errors=?")
        echo "$label $sys $line" >>"$results"
        echo "$label $sys: $line"
    done
}
common=(--key-size 8 --val-size 256 --key-space-size 100000)
run "put 1 client" put "${common[@]}" --total $((TOTAL / 10)) --clients 1 --conns 1 --target-leader
run "put 100 clients" put "${common[@]}" --total "$TOTAL" --clients 100 --conns 10 --target-leader
run "put 1000 clients" put "${common[@]}" --total "$TOTAL" --clients 1000 --conns 100 --target-leader
run "range l 1 client" range foo --total $((TOTAL / 10)) --clients 1 --conns 1 --consistency l
run "range s 1 client" range foo --total $((TOTAL / 10)) --clients 1 --conns 1 --consistency s
run "range l 100 clients" range foo --total "$TOTAL" --clients 100 --conns 10 --consistency l
run "range s 100 clients" range foo --total "$TOTAL" --clients 100 --conns 10 --consistency s
run "txn-put 100 clients" txn-put --key-size 8 --val-size 256 --key-space-size 100000 --total "$TOTAL" --clients 100 --conns 10 --target-leader

# Memory: RSS of each member after RSS_KEYS distinct keys.
for sys in etcd keel; do
    eval "eps=\$EP_$sys"
    "$KEELCTL" bench put --endpoints "$eps" --key-size 8 --val-size 256 --key-space-size "$RSS_KEYS" \
        --sequential-keys --total "$RSS_KEYS" --clients 200 --conns 20 --target-leader >/dev/null
    eval "ps_pids=(\"\${pids_$sys[@]}\")"
    rss=0
    for p in "${ps_pids[@]}"; do r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status"); [ "$r" -gt "$rss" ] && rss=$r; done
    echo "rss $sys RESULT rss_kb=$rss" >>"$results"
    echo "rss $sys: max member RSS ${rss} kB after $RSS_KEYS keys"
done

echo
python3 - "$results" <<'PY'
import sys, re
rows = {}
for line in open(sys.argv[1]):
    label, rest = line.split(" RESULT ", 1)
    name, system = label.rsplit(" ", 1)
    fields = dict(kv.split("=", 1) for kv in rest.split())
    rows.setdefault(name, {})[system] = fields
print(f"{'workload':22} {'etcd qps':>10} {'keel qps':>10} {'ratio':>6} {'etcd p99':>9} {'keel p99':>9}")
for name, s in rows.items():
    e, k = s.get("etcd", {}), s.get("keel", {})
    if "rss_kb" in e:
        ek, kk = int(e["rss_kb"]), int(k["rss_kb"])
        print(f"{'RSS after keys (MiB)':22} {ek/1024:10.0f} {kk/1024:10.0f} {ek/max(kk,1):6.2f}  (etcd/keel: >1 means keel is smaller)")
        continue
    eq, kq = float(e.get("qps", 0)), float(k.get("qps", 0))
    print(f"{name:22} {eq:10.0f} {kq:10.0f} {kq/max(eq,1e-9):6.2f} {e.get('p99_ms','?'):>9} {k.get('p99_ms','?'):>9}")
PY
