#!/usr/bin/env python3
"""Drives two etcd JSON gateways (a real etcd 3.4.23 and keel) through the same curl
requests and requires the same answers: HTTP status and JSON, after normalising what
must differ (member and cluster IDs, auth tokens, ports, sizes, timings).

Usage: gateway_compare.py ETCD_URL KEEL_URL [CACERT]
Each side's URL is http(s)://127.0.0.1:PORT of a fresh single-member cluster.
"""

import base64
import json
import re
import subprocess
import sys
import time

ETCD, KEEL = sys.argv[1], sys.argv[2]
CACERT = sys.argv[3] if len(sys.argv) > 3 else None
SIDES = {"etcd": ETCD, "keel": KEEL}
checks = 0


def b64(s):
    return base64.b64encode(s.encode()).decode()


def curl_args(url, body, token):
    args = ["curl", "-sS", "-X", "POST", url]
    if CACERT:
        args += ["--cacert", CACERT]
    if body is not None:
        args += ["-d", body]
    if token:
        args += ["-H", "Authorization: " + token]
    return args


def call(side, path, body=None, token=None, method="POST"):
    """One unary request with curl: (HTTP status, body text)."""
    args = curl_args(SIDES[side] + path, body, token)
    args[args.index("POST")] = method
    out = subprocess.run(args + ["-w", "\n%{http_code}"], capture_output=True, text=True, timeout=20)
    text, _, code = out.stdout.rpartition("\n")
    return int(code), text


class Normaliser:
    """What must differ between two clusters, replaced by names."""

    def __init__(self):
        self.ids = {}

    def name_id(self, v):
        return self.ids.setdefault(v, "<id%d>" % len(self.ids))

    def value(self, key, v):
        if key in ("cluster_id", "member_id", "leader"):
            return self.name_id(v)
        if key == "ID" and isinstance(v, str) and len(v) > 12:
            return self.name_id(v)  # member IDs; lease IDs in these checks are short
        if key in ("raft_term", "token", "version", "dbSize", "dbSizeInUse", "raftIndex",
                   "raftAppliedIndex", "raftTerm", "hash", "blob", "remaining_bytes"):
            return "<%s>" % key
        if key in ("peerURLs", "clientURLs"):
            return [re.sub(r":\d+$", ":<port>", u) for u in v]
        return v

    def walk(self, x, key=None):
        if isinstance(x, dict):
            return {k: self.walk(v, k) for k, v in x.items()}
        if isinstance(x, list) and key not in ("peerURLs", "clientURLs"):
            out = [self.walk(v, key) for v in x]
            if key == "members":
                # Both list members by ID, and the IDs differ: compare them by name.
                out.sort(key=lambda m: (m.get("name", ""), m.get("peerURLs", [])))
            return out
        return self.value(key, x)


def normal(text, norm):
    """A body (one JSON value or JSON lines) with differences named."""
    lines = [l for l in text.split("\n") if l.strip()]
    try:
        return [norm.walk(json.loads(l)) for l in lines]
    except ValueError:
        return [text]


def same(what, etcd, keel, norms):
    global checks
    a = (etcd[0], normal(etcd[1], norms[0]))
    b = (keel[0], normal(keel[1], norms[1]))
    if a != b:
        print("FAIL: %s\n  etcd: %s\n        %s\n  keel: %s\n        %s"
              % (what, etcd[0], etcd[1], keel[0], keel[1]), file=sys.stderr)
        sys.exit(1)
    checks += 1
    print("ok - %s: %s %s" % (what, a[0], json.dumps(a[1])[:150]))


NORMS = (Normaliser(), Normaliser())


def both(what, path, body=None, token=(None, None), method="POST"):
    """The same request to both; their answers must match. Returns both raw bodies."""
    e = call("etcd", path, body, token[0], method)
    k = call("keel", path, body, token[1], method)
    same(what, e, k, NORMS)
    return e[1], k[1]


def stream_both(what, path, body, action, seconds=2.0, token=(None, None)):
    """A streaming request held open on both while `action()` runs, then compared."""
    procs = {}
    for side, tok in zip(("etcd", "keel"), token):
        args = curl_args(SIDES[side] + path, body, tok) + ["-N", "--max-time", str(seconds)]
        procs[side] = subprocess.Popen(args + ["-w", "\n%{http_code}"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    action()
    outs = {}
    for side, p in procs.items():
        text, _ = p.communicate(timeout=seconds + 10)
        body_text, _, code = text.rpartition("\n")
        outs[side] = (int(code), body_text)
    same(what, outs["etcd"], outs["keel"], NORMS)


def main():
    foo, bar, baz = b64("foo"), b64("bar"), b64("baz")
    # KV
    both("put", "/v3/kv/put", json.dumps({"key": foo, "value": bar}))
    both("put with prev_kv", "/v3/kv/put", json.dumps({"key": foo, "value": baz, "prev_kv": True}))
    for i in range(3):
        both("put prefix key %d" % i, "/v3/kv/put", json.dumps({"key": b64("dir/k%d" % i), "value": b64(str(i))}))
    both("range", "/v3/kv/range", json.dumps({"key": foo}))
    both("range by lowerCamel names and enum numbers", "/v3/kv/range",
         json.dumps({"key": b64("dir/"), "rangeEnd": b64("dir0"), "sortOrder": 2, "sortTarget": "KEY"}))
    both("range prefix, limit, keys only", "/v3/kv/range",
         json.dumps({"key": b64("dir/"), "range_end": b64("dir0"), "limit": "2", "keys_only": True}))
    both("range count only", "/v3/kv/range",
         json.dumps({"key": b64("dir/"), "range_end": b64("dir0"), "count_only": True}))
    both("range at an old revision", "/v3/kv/range", json.dumps({"key": foo, "revision": 2}))
    both("range, unknown fields ignored", "/v3/kv/range", json.dumps({"key": foo, "bogus": 1}))
    both("/v3beta/ as /v3/", "/v3beta/kv/range", json.dumps({"key": foo}))
    both("range of a future revision", "/v3/kv/range", json.dumps({"key": foo, "revision": 1000}))
    both("range without a key", "/v3/kv/range")
    both("a body that is not JSON", "/v3/kv/range", "garbage")
    both("put without a key", "/v3/kv/put", json.dumps({"value": bar}))
    both("put with an unknown lease", "/v3/kv/put", json.dumps({"key": foo, "value": bar, "lease": "123"}))
    both("txn, success branch", "/v3/kv/txn", json.dumps({
        "compare": [{"key": foo, "result": "EQUAL", "target": "VALUE", "value": baz}],
        "success": [{"request_put": {"key": foo, "value": bar}}, {"request_range": {"key": foo}}],
        "failure": [{"request_range": {"key": foo}}]}))
    both("txn, failure branch", "/v3/kv/txn", json.dumps({
        "compare": [{"key": foo, "result": "GREATER", "target": "MOD", "mod_revision": "1000"}],
        "success": [{"request_put": {"key": foo, "value": bar}}],
        "failure": [{"request_delete_range": {"key": b64("dir/k0"), "prev_kv": True}}]}))
    both("deleterange with prev_kv", "/v3/kv/deleterange", json.dumps({"key": b64("dir/"), "range_end": b64("dir0"), "prev_kv": True}))
    both("compaction", "/v3/kv/compaction", json.dumps({"revision": 3}))
    both("compaction again", "/v3/kv/compaction", json.dumps({"revision": 3}))
    both("range below the compaction", "/v3/kv/range", json.dumps({"key": foo, "revision": 2}))
    # HTTP-level errors
    both("GET on a POST path", "/v3/kv/range", method="GET")
    both("unknown path under /v3/", "/v3/kv/nope", "{}")
    both("/v3alpha/ is gone in 3.4", "/v3alpha/kv/range", json.dumps({"key": foo}))
    # Leases (explicit IDs: the same on both sides)
    both("lease grant", "/v3/lease/grant", json.dumps({"TTL": 60, "ID": 7587}))
    both("lease grant, duplicate ID", "/v3/lease/grant", json.dumps({"TTL": 60, "ID": 7587}))
    both("put with the lease", "/v3/kv/put", json.dumps({"key": b64("leased"), "value": bar, "lease": 7587}))
    e, k = call("etcd", "/v3/lease/timetolive", json.dumps({"ID": 7587, "keys": True})), \
        call("keel", "/v3/lease/timetolive", json.dumps({"ID": 7587, "keys": True}))
    for r in (e, k):
        j = json.loads(r[1])
        assert 55 <= int(j["TTL"]) <= 60, r
        j["TTL"] = "<remaining>"
        r_norm = json.dumps(j)
        if r is e:
            e = (e[0], r_norm)
        else:
            k = (k[0], r_norm)
    same("lease timetolive with keys (remaining TTL within 5 s of granted)", e, k, NORMS)
    both("lease timetolive of an unknown lease", "/v3/kv/lease/timetolive", json.dumps({"ID": 1234}))
    both("lease leases", "/v3/lease/leases", "{}")
    stream_both("lease keepalive stream", "/v3/lease/keepalive", json.dumps({"ID": 7587}), lambda: None)
    stream_both("lease keepalive of an unknown lease", "/v3/lease/keepalive", json.dumps({"ID": 1}), lambda: None)
    both("lease revoke", "/v3/lease/revoke", json.dumps({"ID": 7587}))
    both("lease revoke again", "/v3/kv/lease/revoke", json.dumps({"ID": 7587}))
    both("leased key gone with its lease", "/v3/kv/range", json.dumps({"key": b64("leased")}))

    # Watch: a stream that sees a put and a delete, one from an old revision, progress.
    def writes():
        for side in SIDES:
            call(side, "/v3/kv/put", json.dumps({"key": b64("w/a"), "value": bar}))
            call(side, "/v3/kv/deleterange", json.dumps({"key": b64("w/a")}))
    stream_both("watch a prefix: put then delete", "/v3/watch",
                json.dumps({"create_request": {"key": b64("w/"), "range_end": b64("w0")}}), writes)
    stream_both("watch from an old revision", "/v3/watch",
                json.dumps({"create_request": {"key": foo, "start_revision": 3, "prev_kv": True}}), lambda: None)
    stream_both("watch from a compacted revision", "/v3/watch",
                json.dumps({"create_request": {"key": foo, "start_revision": 2}}), lambda: None)
    stream_both("watch then a progress request in the same body", "/v3/watch",
                json.dumps({"create_request": {"key": b64("nothing")}}) + json.dumps({"progress_request": {}}),
                lambda: None)
    # Cluster and maintenance
    both("member list", "/v3/cluster/member/list")
    both("member add as learner", "/v3/cluster/member/add",
         json.dumps({"peerURLs": ["http://127.0.0.1:1"], "isLearner": True}))
    # etcd derives a new member's ID from its URLs and the time in seconds: a second
    # add within the same second would collide on the ID before the URL check.
    time.sleep(1.1)
    both("member add of a peer URL in use", "/v3/cluster/member/add",
         json.dumps({"peerURLs": ["http://127.0.0.1:1"]}))
    both("status", "/v3/maintenance/status")
    both("alarm list", "/v3/maintenance/alarm", "{}")
    both("hash", "/v3/maintenance/hash", "{}")
    both("defragment", "/v3/maintenance/defragment")
    # A snapshot streams the database as base64 chunks: the same shape, not the same bytes.
    shapes = {}
    for side in SIDES:
        args = curl_args(SIDES[side] + "/v3/maintenance/snapshot", None, None) + ["-N"]
        out = subprocess.run(args + ["-w", "\n%{http_code}"], capture_output=True, text=True, timeout=30)
        body, _, code = out.stdout.rpartition("\n")
        lines = [l for l in body.split("\n") if l]
        results = [json.loads(l)["result"] for l in lines]
        keys_ok = all(set(r) <= {"blob", "remaining_bytes"} for r in results)
        remaining = [int(r.get("remaining_bytes", "0")) for r in results]
        blobs = [base64.b64decode(r["blob"]) for r in results]
        shapes[side] = (int(code), keys_ok, remaining == sorted(remaining, reverse=True),
                        remaining[-2:] == [0, 0], len(blobs[-1]) == 32, sum(map(len, blobs[:-1])) >= 16384)
    same("snapshot stream: blob chunks counting remaining_bytes down to 0, then the 32-byte hash",
         (shapes["etcd"][0], json.dumps(shapes["etcd"][1:])), (shapes["keel"][0], json.dumps(shapes["keel"][1:])),
         NORMS)
    both("transfer leadership to a non-member", "/v3/maintenance/transfer-leadership", json.dumps({"targetID": 1}))
    # Election and lock
    both("lease for election and lock", "/v3/lease/grant", json.dumps({"TTL": 60, "ID": 4242}))
    both("election leader before any", "/v3/election/leader", json.dumps({"name": b64("el")}))
    both("election campaign", "/v3/election/campaign", json.dumps({"name": b64("el"), "lease": 4242, "value": b64("v1")}))
    both("election leader", "/v3/election/leader", json.dumps({"name": b64("el")}))
    stream_both("election observe", "/v3/election/observe", json.dumps({"name": b64("el")}), lambda: None)
    both("lock", "/v3/lock/lock", json.dumps({"name": b64("lk"), "lease": 4242}))
    both("unlock", "/v3/lock/unlock", json.dumps({"key": b64("lk/" + format(4242, "x"))}))
    # Auth: enable, then calls without, with a bad and with a good token.
    both("user add root", "/v3/auth/user/add", json.dumps({"name": "root", "password": "rootpw"}))
    both("grant root the root role", "/v3/auth/user/grant", json.dumps({"user": "root", "role": "root"}))
    both("user add alice", "/v3/auth/user/add", json.dumps({"name": "alice", "password": "alicepw"}))
    both("role add reader", "/v3/auth/role/add", json.dumps({"name": "reader"}))
    both("role grant read on foo", "/v3/auth/role/grant",
         json.dumps({"name": "reader", "perm": {"permType": "READ", "key": foo}}))
    both("grant alice the reader role", "/v3/auth/user/grant", json.dumps({"user": "alice", "role": "reader"}))
    both("auth enable", "/v3/auth/enable", "{}")
    both("range without a token", "/v3/kv/range", json.dumps({"key": foo}))
    both("authenticate with a bad password", "/v3/auth/authenticate", json.dumps({"name": "root", "password": "x"}))
    e, k = both("authenticate root", "/v3/auth/authenticate", json.dumps({"name": "root", "password": "rootpw"}))
    root = (json.loads(e)["token"], json.loads(k)["token"])
    e, k = both("authenticate alice", "/v3/auth/authenticate", json.dumps({"name": "alice", "password": "alicepw"}))
    alice = (json.loads(e)["token"], json.loads(k)["token"])
    both("range with root's token", "/v3/kv/range", json.dumps({"key": foo}), token=root)
    both("range with a bogus token", "/v3/kv/range", json.dumps({"key": foo}), token=("bogus", "bogus"))
    both("alice reads foo", "/v3/kv/range", json.dumps({"key": foo}), token=alice)
    both("alice may not write foo", "/v3/kv/put", json.dumps({"key": foo, "value": bar}), token=alice)
    both("alice may not list users", "/v3/auth/user/list", "{}", token=alice)
    both("user get alice", "/v3/auth/user/get", json.dumps({"name": "alice"}), token=root)
    both("role get reader", "/v3/auth/role/get", json.dumps({"role": "reader"}), token=root)
    both("role list", "/v3/auth/role/list", "{}", token=root)
    stream_both("watch with a bogus token", "/v3/watch",
                json.dumps({"create_request": {"key": foo}}), lambda: None, token=("bogus", "bogus"))
    stream_both("watch without a token", "/v3/watch",
                json.dumps({"create_request": {"key": foo}}), lambda: None)
    stream_both("alice may not watch what she may not read", "/v3/watch",
                json.dumps({"create_request": {"key": bar}}), lambda: None, token=alice)
    both("auth disable", "/v3/auth/disable", "{}", token=root)
    print("%d gateway checks passed against etcd 3.4.23 and keel" % checks)


main()
