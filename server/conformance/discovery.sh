#!/usr/bin/env bash
# --discovery conformance: keel members bootstrapping through etcd 3.4's v2 discovery
# protocol, against a real etcd 3.4 (--enable-v2) as the discovery backend, directly and
# behind Debian's discovery.etcd.io service. Checks that keel derives the same member
# and cluster IDs as etcd from the same discovery URL and peer URLs, and etcd's failure
# modes: size missing, duplicate names, full cluster with --discovery-fallback exit and
# proxy. Needs etcd, etcdctl and discovery.etcd.io (Debian etcd-server, etcd-client,
# etcd-discovery; installed when missing and run as root) and a keel binary.
# Loopback only; every process is stopped at exit. Usage: discovery.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
source "$here/lib.sh"

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v discovery.etcd.io >/dev/null || need+=(etcd-discovery)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "missing ${need[*]}: apt-get install -y ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null; } ||
        fail "could not install ${need[*]}"
fi
[ -x "$KEEL" ] || fail "no keel binary at $KEEL"

stop() { # pid...
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# wait_exit PID SECONDS: sets $rc to the process's exit status; fails if it is still
# running. (Not a command substitution: only this shell can wait for its children.)
wait_exit() {
    local pid=$1 secs=$2
    for _ in $(seq 1 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "process $pid still running after ${secs}s"
    rc=0
    wait "$pid" || rc=$?
}

# Files a failed member left in its data dir (none expected).
leftovers() { [ -d "$1" ] && find "$1" -type f | head -3 || true; }

# start_member BINARY NAME CLIENT_PORT PEER_PORT DISCOVERY_URL [extra flags...]
# The member's pid is left in $last_pid.
start_member() {
    local bin=$1 name=$2 cp=$3 pp=$4 url=$5
    shift 5
    local extra=()
    [ "$bin" = "$KEEL" ] && extra=(--heartbeat-interval 50 --election-timeout 500)
    "$bin" --name "$name" --data-dir "$work/$name.$cp" \
        --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --discovery "$url" "${extra[@]}" "$@" >>"$work/$name.$cp.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}

# The discovery backend: a real etcd 3.4 serving the v2 keys API.
B=http://127.0.0.1:11379
etcd --name backend --data-dir "$work/backend" --enable-v2=true \
    --listen-client-urls $B --advertise-client-urls $B \
    --listen-peer-urls http://127.0.0.1:11380 --initial-advertise-peer-urls http://127.0.0.1:11380 \
    --initial-cluster backend=http://127.0.0.1:11380 >"$work/backend.log" 2>&1 &
pids+=($!)
wait_healthy 127.0.0.1:11379
new_token() { # name size -> discovery URL on the backend
    curl -fsS -X PUT "$B/v2/keys/discovery/$1/_config/size" -d value="$2" >/dev/null
    echo "$B/v2/keys/discovery/$1"
}

echo "== (a) discovery through etcd's v2 keys API; IDs identical to etcd's"
EPS="127.0.0.1:12379,127.0.0.1:12479,127.0.0.1:12579"
# The same names, ports and discovery URL, bootstrapped once by etcd and once by keel.
boot_three() { # binary
    local url ps=()
    url=$(new_token ids 3)
    start_member "$1" d1 12379 12380 "$url"; ps+=("$last_pid")
    start_member "$1" d2 12479 12480 "$url"; ps+=("$last_pid")
    start_member "$1" d3 12579 12580 "$url"; ps+=("$last_pid")
    for p in 12379 12479 12579; do wait_healthy 127.0.0.1:$p 60; done
    booted=("${ps[@]}")
}
members() { etcdctl --endpoints="$EPS" member list | sort; }
cluster_id() {
    etcdctl --endpoints=127.0.0.1:12379 endpoint status -w json |
        python3 -c 'import json,sys; print("%x" % json.load(sys.stdin)[0]["Status"]["header"]["cluster_id"])'
}
boot_three etcd
etcd_members=$(members)
etcd_cluster=$(cluster_id)
[ "$(echo "$etcd_members" | wc -l)" = 3 ] || fail "etcd reference cluster: $etcd_members"
stop "${booted[@]}"
rm -rf "$work"/d?.12?79
# Same token again for keel: clear etcd's registrations first.
curl -fsS -X DELETE "$B/v2/keys/discovery/ids?recursive=true" >/dev/null
boot_three "$KEEL"
keel_members=$(members)
[ "$(echo "$keel_members" | wc -l)" = 3 ] || fail "keel member list: $keel_members"
ok "3 keel members formed one cluster by discovery"
if [ "$keel_members" != "$etcd_members" ]; then
    fail "member list differs from etcd's for the same discovery URL:
etcd:
$etcd_members
keel:
$keel_members"
fi
ok "member IDs, names and URLs identical to etcd's ($(echo "$keel_members" | cut -d, -f1 | tr '\n' ' '))"
[ "$(cluster_id)" = "$etcd_cluster" ] || fail "cluster ID $(cluster_id), etcd's $etcd_cluster"
ok "cluster ID identical to etcd's ($etcd_cluster)"
etcdctl --endpoints=127.0.0.1:12379 put disc-key disc-value >/dev/null
[ "$(etcdctl --endpoints=127.0.0.1:12579 get disc-key --print-value-only)" = disc-value ] ||
    fail "a put on d1 is not read on d3"
ok "put on one member, read on another"
registered=$(curl -fsS "$B/v2/keys/discovery/ids" | python3 -c '
import json, sys
print(" ".join(sorted(n["key"].rsplit("/", 1)[1] for n in json.load(sys.stdin)["node"]["nodes"] if not n["key"].endswith("/_config"))))')
[ "$registered" = "$(echo "$keel_members" | cut -d, -f1 | sort | tr '\n' ' ' | sed 's/ $//')" ] ||
    fail "registrations $registered do not match the member IDs"
ok "registered under the member IDs"
stop "${booted[@]}"

echo "== (b) discovery through discovery.etcd.io"
discovery.etcd.io --etcd $B --host http://127.0.0.1:11087 --addr 127.0.0.1:11087 >"$work/disc-svc.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:11087/health >/dev/null 2>&1 && break; sleep 0.1; done
url=$(curl -fsS "http://127.0.0.1:11087/new?size=3")
[[ "$url" =~ ^http://127\.0\.0\.1:11087/[0-9a-f]{32}$ ]] || fail "discovery.etcd.io /new gave: $url"
ps=()
start_member "$KEEL" s1 13379 13380 "$url"; ps+=("$last_pid")
start_member "$KEEL" s2 13479 13480 "$url"; ps+=("$last_pid")
start_member "$KEEL" s3 13579 13580 "$url"; ps+=("$last_pid")
for p in 13379 13479 13579; do wait_healthy 127.0.0.1:$p 60; done
SEPS=127.0.0.1:13379,127.0.0.1:13479,127.0.0.1:13579
[ "$(etcdctl --endpoints=$SEPS member list | wc -l)" = 3 ] || fail "member list: $(etcdctl --endpoints=$SEPS member list)"
etcdctl --endpoints=127.0.0.1:13479 put via-service yes >/dev/null
[ "$(etcdctl --endpoints=127.0.0.1:13379 get via-service --print-value-only)" = yes ] || fail "read on s1"
n=$(curl -fsS "$url" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["node"]["nodes"]))')
[ "$n" = 3 ] || fail "discovery.etcd.io lists $n registrations"
ok "3 keel members formed one cluster through discovery.etcd.io"
stop "${ps[@]}"

echo "== (c) size missing"
url="$B/v2/keys/discovery/nosize"
ps=()
start_member "$KEEL" n1 14379 14380 "$url"; ps+=("$last_pid")
start_member "$KEEL" n2 14479 14480 "$url"; ps+=("$last_pid")
want="failed to join discovery cluster (the cluster doesn't have a size configuration value in $url/_config)"
for i in 0 1; do
    log="$work/n$((i + 1)).14$((i + 3))79.log"
    wait_exit "${ps[$i]}" 20
    [ "$rc" != 0 ] || fail "n$((i + 1)) exited 0 without a size"
    grep -qF "keel: $want" "$log" || fail "n$((i + 1)): expected \"$want\"; log: $(tail -3 "$log")"
done
ok "size missing: both members exit $rc with \"$want\""

echo "== (d) two members with the same name"
url=$(new_token dup 2)
ps=()
start_member "$KEEL" same 15379 15380 "$url"; ps+=("$last_pid")
start_member "$KEEL" same 15479 15480 "$url"; ps+=("$last_pid")
want="failed to join discovery cluster (discovery: found duplicate name)"
for i in 0 1; do
    cp=15$((i + 3))79
    wait_exit "${ps[$i]}" 20
    [ "$rc" != 0 ] || fail "member on $cp exited 0 with a duplicate name"
    grep -qF "keel: $want" "$work/same.$cp.log" || fail "member on $cp: expected \"$want\"; log: $(tail -3 "$work/same.$cp.log")"
    left=$(leftovers "$work/same.$cp")
    [ -z "$left" ] || fail "member on $cp left files behind: $left"
done
ok "duplicate name: both members exit $rc with \"$want\", no data left"

echo "== (e) cluster full"
url=$(new_token full 1)
start_member "$KEEL" f1 16379 16380 "$url"
f1=$last_pid
wait_healthy 127.0.0.1:16379
start_member "$KEEL" f2 16479 16480 "$url" --discovery-fallback exit
want="failed to join discovery cluster (discovery: cluster is full)"
wait_exit "$last_pid" 20
[ "$rc" != 0 ] || fail "--discovery-fallback exit: exited 0 on a full cluster"
grep -qF "keel: $want" "$work/f2.16479.log" || fail "expected \"$want\"; log: $(tail -3 "$work/f2.16479.log")"
left=$(leftovers "$work/f2.16479")
[ -z "$left" ] || fail "--discovery-fallback exit left files behind: $left"
ok "full cluster, --discovery-fallback exit: exit $rc with \"$want\""
start_member "$KEEL" f3 16579 16580 "$url" --discovery-fallback proxy
proxy=$last_pid
put_ok=
for _ in $(seq 1 100); do
    if etcdctl --endpoints=127.0.0.1:16579 --command-timeout=1s put through-proxy 1 >/dev/null 2>&1; then
        put_ok=1
        break
    fi
    kill -0 "$proxy" 2>/dev/null || fail "proxy exited: $(tail -3 "$work/f3.16579.log")"
    sleep 0.1
done
[ -n "$put_ok" ] || fail "put through the proxy never succeeded; log: $(tail -3 "$work/f3.16579.log")"
[ "$(etcdctl --endpoints=127.0.0.1:16379 get through-proxy --print-value-only)" = 1 ] || fail "proxied put not on f1"
etcdctl --endpoints=127.0.0.1:16379 put from-member 2 >/dev/null
[ "$(etcdctl --endpoints=127.0.0.1:16579 get from-member --print-value-only)" = 2 ] || fail "get through the proxy"
[ "$(etcdctl --endpoints=127.0.0.1:16579 member list | wc -l)" = 1 ] || fail "the proxy joined the cluster"
n=$(curl -fsS "$B/v2/keys/discovery/full" | python3 -c 'import json,sys; print(len([n for n in json.load(sys.stdin)["node"]["nodes"] if not n["key"].endswith("/_config")]))')
[ "$n" = 1 ] || fail "$n registrations on a size-1 token"
ok "full cluster, --discovery-fallback proxy: etcdctl put/get through the proxy"
stop "$proxy" "$f1"

echo "== (f) --discovery-proxy / ETCD_DISCOVERY_PROXY"
# A forward HTTP proxy that alone can reach the discovery host: *.invalid never resolves,
# so a member that bootstraps did so through the proxy. Requests are logged.
python3 - 11088 "$work/proxy-requests.log" <<'PY' >"$work/http-proxy.log" 2>&1 &
import http.client, http.server, sys, urllib.parse
port, log = int(sys.argv[1]), sys.argv[2]
class Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def forward(self):
        u = urllib.parse.urlsplit(self.path)
        host = "127.0.0.1" if (u.hostname or "").endswith(".invalid") else u.hostname
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "proxy-connection", "content-length")}
        c = http.client.HTTPConnection(host, u.port or 80, timeout=600)
        c.request(self.command, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        with open(log, "a") as f:
            f.write("%s %s %d\n" % (self.command, self.path, r.status))
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_PUT = forward
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Forward).serve_forever()
PY
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/11088) 2>/dev/null && break; sleep 0.1; done
new_token viaproxy 2 >/dev/null
url="http://discovery.invalid:11379/v2/keys/discovery/viaproxy"
ps=()
# Without a scheme, as etcd accepts it ("host:port" means http).
ETCD_DISCOVERY_PROXY=127.0.0.1:11088 start_member "$KEEL" p1 17379 17380 "$url"; ps+=("$last_pid")
start_member "$KEEL" p2 17479 17480 "$url" --discovery-proxy http://127.0.0.1:11088; ps+=("$last_pid")
for p in 17379 17479; do wait_healthy 127.0.0.1:$p 60; done
[ "$(etcdctl --endpoints=127.0.0.1:17379,127.0.0.1:17479 member list | wc -l)" = 2 ] || fail "member list through the proxy"
for id in $(etcdctl --endpoints=127.0.0.1:17379 member list | cut -d, -f1); do
    grep -q "^PUT $url/$id?prevExist=false 201$" "$work/proxy-requests.log" ||
        fail "registration of $id did not go through the proxy: $(cat "$work/proxy-requests.log")"
done
ok "both members registered through the proxy (env and flag), cluster formed"
stop "${ps[@]}"

echo "== (g) keel as the discovery service: no etcd anywhere"
KEELCTL="${KEELCTL:-$(dirname "$KEEL")/keelctl}"
[ -x "$KEELCTL" ] || fail "no keelctl binary at $KEELCTL"
"$KEEL" --name disco --data-dir "$work/disco" --enable-v2 \
    --listen-client-urls http://127.0.0.1:18379 --advertise-client-urls http://127.0.0.1:18379 \
    --listen-peer-urls http://127.0.0.1:18380 --initial-advertise-peer-urls http://127.0.0.1:18380 \
    --initial-cluster disco=http://127.0.0.1:18380 >"$work/disco.log" 2>&1 &
pids+=($!)
wait_healthy 127.0.0.1:18379
url=$(timeout 30 "$KEELCTL" discovery new --size 3 --endpoint http://127.0.0.1:18379)
[[ "$url" =~ ^http://127\.0\.0\.1:18379/v2/keys/discovery/[0-9a-f]{32}$ ]] || fail "keelctl discovery new printed: $url"
ps=()
start_member "$KEEL" g1 19379 19380 "$url"; ps+=("$last_pid")
start_member "$KEEL" g2 19479 19480 "$url"; ps+=("$last_pid")
start_member "$KEEL" g3 19579 19580 "$url"; ps+=("$last_pid")
for p in 19379 19479 19579; do wait_healthy 127.0.0.1:$p 60; done
GEPS=127.0.0.1:19379,127.0.0.1:19479,127.0.0.1:19579
[ "$(etcdctl --endpoints=$GEPS member list | wc -l)" = 3 ] || fail "member list: $(etcdctl --endpoints=$GEPS member list)"
etcdctl --endpoints=127.0.0.1:19479 put via-keel yes >/dev/null
[ "$(etcdctl --endpoints=127.0.0.1:19579 get via-keel --print-value-only)" = yes ] || fail "read on g3"
registered=$(curl -fsS "$url" | python3 -c 'import json,sys; print(" ".join(sorted(n["key"].rsplit("/",1)[1] for n in json.load(sys.stdin)["node"]["nodes"])))')
ids=$(etcdctl --endpoints=$GEPS member list | cut -d, -f1 | sort | paste -sd' ')
[ "$registered" = "$ids" ] || fail "registrations ($registered) are not the member IDs ($ids)"
ok "3 keel members bootstrapped through a keel discovery service (keelctl discovery new), registered under their IDs"
stop "${ps[@]}"
# A restart with a data dir ignores the discovery URL, with etcd's message, and rejoins
# without registering again (the service is gone: a new registration would fail).
ps=()
start_member "$KEEL" g1 19379 19380 "http://127.0.0.1:1/v2/keys/discovery/gone"; ps+=("$last_pid")
start_member "$KEEL" g2 19479 19480 "http://127.0.0.1:1/v2/keys/discovery/gone"; ps+=("$last_pid")
for p in 19379 19479; do wait_healthy 127.0.0.1:$p; done
grep -q "discovery token ignored since a cluster has already been initialized. Valid log found at $work/g1.19379/member/wal" "$work/g1.19379.log" ||
    fail "restart log: $(tail -3 "$work/g1.19379.log")"
[ "$(etcdctl --endpoints=127.0.0.1:19379 get via-keel --print-value-only)" = yes ] || fail "data after restart"
ok "restart with a data dir: discovery URL ignored with etcd's message, data intact"
stop "${ps[@]}"

echo "$passed passed"
