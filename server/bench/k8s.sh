#!/usr/bin/env bash
# The Kubernetes-shaped benchmark (issue #24), keel and etcd 3.4 side by side: a 3-member
# cluster of each on loopback, both up for the whole run, `keelctl bench k8s` against
# each in alternating pairs (keel, etcd, keel, etcd ...), with and without the lister.
# 20000 objects of 1 KiB under /registry/pods/, 32 writers doing kube-apiserver's
# compare-mod_revision update, one client LISTing the whole prefix unpaginated in a
# loop, 4 prefix watchers that must see every write. Not a test: figures depend on the
# machine; compare the ratios. Ports 11379-16380 (below Linux's ephemeral range). Usage: k8s.sh [--pairs N] [--seconds S] [--objects N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
PAIRS=2
SECONDS_PER_RUN=20
OBJECTS=20000
while [ $# -gt 0 ]; do
    case $1 in
        --pairs) PAIRS=$2; shift 2 ;;
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --objects) OBJECTS=$2; shift 2 ;;
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

# cluster BINARY PREFIX BASEPORT: three members on BASEPORT+{1,2,3}{379,380}, kubeadm's
# --snapshot-count 10000.
cluster() {
    local bin=$1 prefix=$2 base=$3 ic="" i
    for i in 1 2 3; do ic+="${ic:+,}$prefix$i=http://127.0.0.1:$((base + i * 1000 + 380))"; done
    for i in 1 2 3; do
        local cp=$((base + i * 1000 + 379)) pp=$((base + i * 1000 + 380))
        "$bin" --name "$prefix$i" --data-dir "$work/$prefix$i" --snapshot-count 10000 \
            --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
            --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
            --initial-cluster "$ic" --initial-cluster-token "k8s-$prefix" >"$work/$prefix$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        for _ in $(seq 1 100); do
            etcdctl --endpoints="127.0.0.1:$((base + i * 1000 + 379))" endpoint health >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
}
cluster "$(command -v etcd)" etcd 10000
cluster "$KEEL" keel 13000
EP_etcd="http://127.0.0.1:11379,http://127.0.0.1:12379,http://127.0.0.1:13379"
EP_keel="http://127.0.0.1:14379,http://127.0.0.1:15379,http://127.0.0.1:16379"

results="$work/results"
: >"$results"
for pair in $(seq 1 "$PAIRS"); do
    for listers in 1 0; do
        for sys in keel etcd; do
            eval "eps=\$EP_$sys"
            line=$("$KEELCTL" bench k8s --endpoints "$eps" --objects "$OBJECTS" --listers "$listers" \
                --seconds "$SECONDS_PER_RUN" | grep '^RESULT' || echo "RESULT failed=1")
            echo "$sys $pair $line" >>"$results"
            echo "pair $pair $sys listers=$listers: ${line#RESULT }"
        done
    done
done

echo
python3 - "$results" <<'PY'
import sys
runs = []
for line in open(sys.argv[1]):
    sys_, pair, rest = line.split(" ", 2)
    f = dict(kv.split("=", 1) for kv in rest.split()[1:])
    runs.append((sys_, int(pair), f))
cols = ["writes_per_s", "write_p99_ms", "write_p999_ms", "write_max_ms", "list_p50_ms", "list_max_ms"]
print(f"{'system':6} {'pair':>4} {'listers':>7} " + " ".join(f"{c:>13}" for c in cols) + "  watchers")
for s, p, f in runs:
    print(f"{s:6} {p:4} {f.get('listers','?'):>7} " + " ".join(f"{f.get(c,'?'):>13}" for c in cols) + f"  {f.get('watchers_complete','?')}")
def med(xs):
    xs = sorted(xs); return xs[len(xs)//2] if xs else float('nan')
print()
for listers in ("1", "0"):
    for c in cols:
        k = med([float(f[c]) for s, p, f in runs if s == "keel" and f.get("listers") == listers and c in f])
        e = med([float(f[c]) for s, p, f in runs if s == "etcd" and f.get("listers") == listers and c in f])
        if k == k and e == e:
            print(f"listers={listers} {c:14} keel {k:9.1f} etcd {e:9.1f} keel/etcd {k/max(e,1e-9):6.2f}")
PY
