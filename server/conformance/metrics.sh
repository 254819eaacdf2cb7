#!/usr/bin/env bash
# /metrics and the health probes, keel beside a real etcd 3.4.23, both with
# --listen-metrics-urls and a small --quota-backend-bytes:
# - every metric name etcd's Grafana dashboard and the etcd-mixin read
#   (runtime-tokio/tests/data/etcd_dashboard_metrics.txt) is on keel's metrics listener
#   and its client port, and both expositions parse with the Prometheus project's Python
#   parser (prometheus_client);
# - every metric family keel and etcd both export has etcd's type, label names and
#   histogram buckets;
# - /health, /health?serializable=true and /health?exclude=NOSPACE answer as etcd's (body
#   and status), healthy and with a NOSPACE alarm raised by filling the quota;
# - /livez and /readyz (etcd 3.5; etcd 3.4.23 answers 404) answer as etcd 3.5 documents;
# - the metrics listener serves no /version, as etcd's.
# keel runs 3 members (the peer metrics exist only with peers), etcd one.
# Needs etcd, etcdctl, curl and python3 with prometheus-client. Loopback only, ports
# 6100-6199; every process is stopped at exit. Usage: metrics.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"
names="$here/../../runtime-tokio/tests/data/etcd_dashboard_metrics.txt"
check() { python3 "$here/metrics_check.py" "$@"; }

quota=300000
start_etcd e1 6101 6102 e1=http://127.0.0.1:6102 \
    --listen-metrics-urls http://127.0.0.1:6103 --quota-backend-bytes $quota
ic="k1=http://127.0.0.1:6112,k2=http://127.0.0.1:6122,k3=http://127.0.0.1:6132"
for i in 1 2 3; do
    start_keel "k$i" "61${i}1" "61${i}2" "$ic" \
        --listen-metrics-urls "http://127.0.0.1:61${i}3" --quota-backend-bytes $quota
done
wait_healthy 127.0.0.1:6101 20
for i in 1 2 3; do wait_healthy "127.0.0.1:61${i}1" 20; done
for ep in 127.0.0.1:6101 127.0.0.1:6111; do
    etcdctl --endpoints=$ep put a 1 >/dev/null
    etcdctl --endpoints=$ep get a >/dev/null
done

# scrape URL FILE
scrape() { curl -fsS "$1" -o "$2" || fail "GET $1"; }
scrape http://127.0.0.1:6103/metrics "$work/etcd.metrics"
# The peer round-trip histogram is observed as each peer connection opens: wait for
# every member to have dialed the others.
within 10 bash -c "curl -fsS http://127.0.0.1:6113/metrics | grep '^etcd_network_peer_round_trip_time_seconds_count' >/dev/null" ||
    fail "keel: no peer round trip measured"
scrape http://127.0.0.1:6113/metrics "$work/keel.metrics"
scrape http://127.0.0.1:6111/metrics "$work/keel-client.metrics"
run check same "$work/etcd.metrics" "$work/etcd.metrics"
[ $rc = 0 ] || fail "etcd's own /metrics does not parse: $out"
run check names "$work/keel.metrics" "$names"
[ $rc = 0 ] || fail "keel's metrics listener: $out"
ok "keel's metrics listener: every dashboard and mixin metric, parsed ($out)"
run check names "$work/keel-client.metrics" "$names"
[ $rc = 0 ] || fail "keel's client port: $out"
ok "keel's client port /metrics: every dashboard and mixin metric, parsed"
run check same "$work/etcd.metrics" "$work/keel.metrics"
[ $rc = 0 ] || fail "keel's metrics differ from etcd's: $out"
ok "keel's metrics have etcd's types, labels and buckets ($out)"

# answer URL: "STATUS BODY" of a GET, the body's newlines shown as \n.
answer() {
    local body
    body=$(curl -sS -w '\n%{http_code}' "$1" | python3 -c 'import sys; t=sys.stdin.read(); b,c=t.rsplit("\n",1); print(c, repr(b))')
    echo "$body"
}
# same_health WHEN: /health and its variants as etcd answers them, on keel's metrics
# listener and client port.
same_health() {
    local p e k kc
    for p in "/health" "/health?serializable=true" "/health?exclude=NOSPACE" "/health?exclude=NOSPACE&serializable=true"; do
        e=$(answer "http://127.0.0.1:6103$p")
        k=$(answer "http://127.0.0.1:6113$p")
        kc=$(answer "http://127.0.0.1:6111$p")
        [ "$k" = "$e" ] || fail "$1: $p on keel's metrics listener: $k, etcd: $e"
        [ "$kc" = "$e" ] || fail "$1: $p on keel's client port: $kc, etcd: $e"
    done
    ok "$1: /health, ?serializable=true, ?exclude=NOSPACE as etcd's ($(answer http://127.0.0.1:6103/health))"
}
# probes WHEN: /livez and /readyz as etcd 3.5 answers them (etcd 3.4.23 has neither).
probes() {
    local want
    [ "$(answer http://127.0.0.1:6103/livez)" = "404 '404 page not found\\n'" ] ||
        fail "etcd 3.4.23 has grown /livez: $(answer http://127.0.0.1:6103/livez)"
    for port in 6113 6111; do
        [ "$(answer http://127.0.0.1:$port/livez)" = "200 'ok\\n'" ] ||
            fail "$1: /livez on $port: $(answer http://127.0.0.1:$port/livez)"
        [ "$(answer "http://127.0.0.1:$port/livez?verbose")" = "200 '[+]serializable_read ok\\nok\\n'" ] ||
            fail "$1: /livez?verbose on $port: $(answer "http://127.0.0.1:$port/livez?verbose")"
        want="200 '[+]data_corruption ok\\n[+]serializable_read ok\\n[+]linearizable_read ok\\nok\\n'"
        [ "$(answer "http://127.0.0.1:$port/readyz?verbose")" = "$want" ] ||
            fail "$1: /readyz?verbose on $port: $(answer "http://127.0.0.1:$port/readyz?verbose")"
        [ "$(answer "http://127.0.0.1:$port/readyz?exclude=linearizable_read&verbose")" = "200 '[+]data_corruption ok\\n[+]serializable_read ok\\nok\\n'" ] ||
            fail "$1: /readyz?exclude= on $port"
    done
    ok "$1: /livez and /readyz (plain, ?verbose, ?exclude=) as etcd 3.5 answers them"
}
same_health healthy
probes healthy
[ "$(answer http://127.0.0.1:6113/version)" = "$(answer http://127.0.0.1:6103/version)" ] ||
    fail "/version on the metrics listener: keel $(answer http://127.0.0.1:6113/version), etcd $(answer http://127.0.0.1:6103/version)"
ok "the metrics listener serves no /version, as etcd's"

# NOSPACE: fill each quota with 100 kB values until a put is refused.
head -c 100000 /dev/zero | tr '\0' x >"$work/value"
for ep in 127.0.0.1:6101 127.0.0.1:6111; do
    for i in $(seq 1 20); do
        run etcdctl --endpoints=$ep put "big$i" <"$work/value"
        [ $rc = 0 ] || break
    done
    [[ "$out" == *"database space exceeded"* ]] || fail "$ep: the quota never filled: $out"
    run etcdctl --endpoints=$ep alarm list
    [[ "$out" == *"alarm:NOSPACE"* ]] || fail "$ep: no NOSPACE alarm: $out"
done
same_health "NOSPACE alarm"
probes "NOSPACE alarm"
echo "$passed passed, 0 failed"
