#!/usr/bin/env bash
# Backups that move between etcd 3.4 and keel both ways, with etcd's own tools:
# - keel -> etcd: a 3-member keel holding keys with several revisions (some deleted, one
#   of 10 kB), a compaction, leases with attached keys, users and roles with auth on;
#   `etcdctl snapshot save` against it; `etcdctl snapshot status` reads the file and
#   prints what `keelctl snapshot status` prints; `etcdctl snapshot restore` + a 3-member
#   etcd serve the same keys (create/mod revisions, versions, lease IDs), the same
#   history at and after the compaction (and refuse it below), leases, users and roles.
# - etcd -> keel: the same data made on a 3-member etcd 3.4.23, saved with etcdctl,
#   restored by `keelctl snapshot restore` into a 3-member keel: the same answers, and a
#   watch from the compaction revision delivers the same events.
# - keel -> keel, and `keelctl migrate --from-etcd-data-dir` of a stopped etcd member.
# - damaged files: a flipped byte or a truncated file is refused in one line, leaving
#   no data dir behind.
# Needs etcd, etcdctl (Debian etcd-server, etcd-client), python3 and release builds of
# keel and keelctl. Loopback only; every process is stopped at exit.
# Usage: backup.sh [path/to/keel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KEEL="${1:-$here/../../target/release/keel}"
KEELCTL="$(dirname "$KEEL")/keelctl"
source "$here/lib.sh"

AUTH=(--user root:rootpw)

# ic NAME BASE: --initial-cluster for members NAME1..3 with peer ports BASE{1,2,3}80.
ic() { echo "${1}1=http://127.0.0.1:${2}180,${1}2=http://127.0.0.1:${2}280,${1}3=http://127.0.0.1:${2}380"; }

# start3 SYSTEM NAME BASE [flags]: members NAME1..3 on client ports BASE{1,2,3}79.
start3() {
    local sys=$1 n=$2 b=$3
    shift 3
    for i in 1 2 3; do "start_$sys" "$n$i" "$b${i}79" "$b${i}80" "$(ic "$n" "$b")" "$@"; done
    for i in 1 2 3; do wait_up "127.0.0.1:$b${i}79"; done
}

# wait_up ENDPOINT: healthy, asked as root (a restored cluster has auth on, and etcdctl
# without a user counts "user name is empty" as unhealthy).
wait_up() {
    within 30 healthy "$1" || fail "$1 never became healthy"
}
healthy() {
    etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=1s endpoint health >/dev/null 2>&1 \
        || etcdctl --endpoints="$1" "${AUTH[@]}" --dial-timeout=1s --command-timeout=1s endpoint health >/dev/null 2>&1
}

# load ENDPOINT: the same history on either system. Prints the compaction revision.
load() {
    local E=(etcdctl --endpoints="$1")
    for i in $(seq 1 40); do "${E[@]}" put "key$((i % 7))" "v$i" >/dev/null; done
    "${E[@]}" del key3 >/dev/null
    "${E[@]}" put big "$(head -c 10000 /dev/zero | tr '\0' x)" >/dev/null
    for i in $(seq 1 60); do "${E[@]}" put "/pub/item$i" "value $i" >/dev/null; done
    "${E[@]}" del key5 >/dev/null
    local rev
    rev=$("${E[@]}" get key0 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
    local c=$((rev - 30))
    "${E[@]}" compact "$c" >/dev/null
    local l1 l2
    l1=$("${E[@]}" lease grant 600 | awk '{print $2}')
    l2=$("${E[@]}" lease grant 900 | awk '{print $2}')
    "${E[@]}" put --lease="$l1" leased1 a >/dev/null
    "${E[@]}" put --lease="$l1" leased2 b >/dev/null
    "${E[@]}" put key1 after-compaction >/dev/null
    "${E[@]}" del key2 >/dev/null
    "${E[@]}" put "/pub/item7" "rewritten" >/dev/null
    "${E[@]}" user add root:rootpw >/dev/null
    "${E[@]}" user add alice:apw >/dev/null
    "${E[@]}" role add reader >/dev/null
    "${E[@]}" role grant-permission reader read /pub/ --prefix=true >/dev/null
    "${E[@]}" role grant-permission reader readwrite /rw/a >/dev/null
    "${E[@]}" user grant-role alice reader >/dev/null
    "${E[@]}" auth enable >/dev/null
    echo "$c"
}

# view ENDPOINT COMPACTED: everything a restore must keep, as etcdctl prints it, without
# what names the cluster (IDs, term) or counts time (remaining TTL).
view() {
    local E=(etcdctl --endpoints="$1" "${AUTH[@]}") c=$2
    "${E[@]}" get "" --prefix -w json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("revision", r["header"]["revision"])
for kv in r.get("kvs", []):
    print(json.dumps(kv, sort_keys=True))'
    for rev in "$c" $((c + 3)) $((c + 20)); do
        echo "--- at $rev"
        "${E[@]}" get "" --prefix --rev="$rev" -w json | python3 -c '
import json, sys
for kv in json.load(sys.stdin).get("kvs", []):
    print(json.dumps(kv, sort_keys=True))'
    done
    echo "--- below the compaction"
    "${E[@]}" get key0 --rev=$((c - 1)) 2>&1 || true
    echo "--- leases"
    for id in $("${E[@]}" lease list | tail -n +2 | sort); do
        # etcd lists a lease's keys in map order: sorted here.
        "${E[@]}" lease timetolive "$id" --keys | python3 -c '
import re, sys
for line in sys.stdin:
    line = re.sub(r"remaining\(\d+s\)", "remaining(-)", line.rstrip("\n"))
    m = re.search(r"attached keys\(\[(.*)\]\)", line)
    if m:
        line = line[: m.start(1)] + " ".join(sorted(m.group(1).split())) + line[m.end(1):]
    print(line)'
    done
    echo "--- auth"
    "${E[@]}" user list
    "${E[@]}" role list
    "${E[@]}" user get alice
    "${E[@]}" role get reader
    etcdctl --endpoints="$1" --user alice:apw get /pub/item1 --print-value-only
    etcdctl --endpoints="$1" --user alice:apw put /pub/x y 2>&1 || true
}

# watched ENDPOINT REV: the events a watch from REV delivers (bounded by time).
watched() {
    timeout 3 etcdctl --endpoints="$1" "${AUTH[@]}" watch --rev="$2" "" --prefix 2>&1 | grep -av '^{"level":' || true
}

same() { # what LEFT RIGHT
    if ! diff -u "$2" "$3" >"$work/diff"; then
        cat "$work/diff" >&2
        fail "$1"
    fi
}

restored_by_etcdctl() { # FILE NAME BASE
    local f=$1 n=$2 b=$3
    for i in 1 2 3; do
        etcdctl snapshot restore "$f" --name "$n$i" --data-dir "$work/$n$i" \
            --initial-cluster "$(ic "$n" "$b")" --initial-cluster-token restored \
            --initial-advertise-peer-urls "http://127.0.0.1:$b${i}80" >"$work/restore-$n$i.out" 2>&1 \
            || { cat "$work/restore-$n$i.out" >&2; fail "etcdctl snapshot restore $f"; }
    done
}

restored_by_keelctl() { # FILE NAME BASE
    local f=$1 n=$2 b=$3
    for i in 1 2 3; do
        "$KEELCTL" snapshot restore "$f" --name "$n$i" --data-dir "$work/$n$i" \
            --initial-cluster "$(ic "$n" "$b")" --initial-cluster-token restored \
            --initial-advertise-peer-urls "http://127.0.0.1:$b${i}80" >"$work/restore-$n$i.out" 2>&1 \
            || { cat "$work/restore-$n$i.out" >&2; fail "keelctl snapshot restore $f"; }
    done
}

# Status as both tools print it, in every format.
same_status() { # FILE
    for w in simple table json fields; do
        etcdctl snapshot status "$1" -w "$w" >"$work/status.etcdctl" 2>&1 || { cat "$work/status.etcdctl" >&2; fail "etcdctl snapshot status $1"; }
        "$KEELCTL" snapshot status "$1" -w "$w" >"$work/status.keelctl" 2>&1 || { cat "$work/status.keelctl" >&2; fail "keelctl snapshot status $1"; }
        same "snapshot status -w $w of $(basename "$1")" "$work/status.etcdctl" "$work/status.keelctl"
    done
}

echo "# keel -> etcd"
start3 keel k 10
c=$(load http://127.0.0.1:10179)
etcdctl --endpoints=http://127.0.0.1:10279 "${AUTH[@]}" snapshot save "$work/keel.db" >"$work/save.out" 2>&1 \
    || { cat "$work/save.out" >&2; fail "etcdctl snapshot save from keel"; }
etcdctl --endpoints=127.0.0.1:10379 "${AUTH[@]}" snapshot save "$work/keel-plain.db" >/dev/null 2>&1 \
    || fail "etcdctl snapshot save from keel (host:port spelling)"
ok "etcdctl snapshot save from keel (http:// and host:port endpoints)"
same_status "$work/keel.db"
ok "etcdctl snapshot status reads keel's snapshot; keelctl prints the same in every format: $(etcdctl snapshot status "$work/keel.db")"
restored_by_etcdctl "$work/keel.db" e 11
start3 etcd e 11
ok "etcdctl snapshot restore of keel's snapshot starts a 3-member etcd 3.4"
view http://127.0.0.1:10179 "$c" | grep -av '^{"level":' >"$work/view.keel"
view http://127.0.0.1:11179 "$c" | grep -av '^{"level":' >"$work/view.etcd-restored"
grep -q '"lease": [1-9]' "$work/view.keel" || fail "the keel view has no key with a lease"
grep -q "required revision has been compacted" "$work/view.keel" || fail "keel served a read below the compaction"
same "keel and the etcd restored from keel's snapshot" "$work/view.keel" "$work/view.etcd-restored"
ok "etcd restored from keel serves the same keys, revisions, versions, lease IDs, history, leases, users and roles ($(grep -c '^{' "$work/view.keel") rows)"

echo "# keel -> keel"
"$KEELCTL" snapshot restore "$work/keel.db" --name q1 --data-dir "$work/q1" \
    --initial-cluster q1=http://127.0.0.1:14680 --initial-advertise-peer-urls http://127.0.0.1:14680 >/dev/null
start_keel q1 14679 14680 q1=http://127.0.0.1:14680
wait_up 127.0.0.1:14679
view http://127.0.0.1:14679 "$c" | grep -av '^{"level":' >"$work/view.keel-restored"
same "keel and a keel restored from its snapshot" "$work/view.keel" "$work/view.keel-restored"
ok "keelctl snapshot restore of keel's snapshot: a one-member keel serving the same"

echo "# etcd -> keel"
start3 etcd s 12
cs=$(load http://127.0.0.1:12179)
etcdctl --endpoints=http://127.0.0.1:12179 "${AUTH[@]}" snapshot save "$work/etcd.db" >/dev/null 2>&1 || fail "etcdctl snapshot save from etcd"
same_status "$work/etcd.db"
ok "keelctl snapshot status of etcd's snapshot prints what etcdctl prints, in every format"
restored_by_keelctl "$work/etcd.db" r 13
start3 keel r 13
view http://127.0.0.1:12179 "$cs" | grep -av '^{"level":' >"$work/view.etcd"
view http://127.0.0.1:13179 "$cs" | grep -av '^{"level":' >"$work/view.keel-from-etcd"
same "etcd and the keel restored from etcd's snapshot" "$work/view.etcd" "$work/view.keel-from-etcd"
ok "keel restored from etcd's snapshot (3 members) serves the same keys, revisions, history, leases, users and roles"
watched http://127.0.0.1:12179 "$cs" >"$work/watch.etcd"
watched http://127.0.0.1:13279 "$cs" >"$work/watch.keel"
[ -s "$work/watch.etcd" ] || fail "the watch on etcd delivered nothing"
same "a watch from the compaction revision" "$work/watch.etcd" "$work/watch.keel"
watched http://127.0.0.1:12179 $((cs + 25)) >"$work/watch.etcd"
watched http://127.0.0.1:13379 $((cs + 25)) >"$work/watch.keel"
same "a watch from after the compaction" "$work/watch.etcd" "$work/watch.keel"
ok "watches from the compaction revision and after deliver the same events ($(wc -l <"$work/watch.etcd") lines)"
etcdctl --endpoints=http://127.0.0.1:13179 "${AUTH[@]}" put after-restore 1 >/dev/null || fail "a write to the restored keel"
ok "the restored keel takes writes"

echo "# migrate a stopped etcd member's data dir"
kill -TERM "$pid_s3"
wait "$pid_s3" 2>/dev/null || true
"$KEELCTL" migrate --from-etcd-data-dir "$work/s3" --name m1 --data-dir "$work/m1" \
    --initial-cluster m1=http://127.0.0.1:14580 --initial-advertise-peer-urls http://127.0.0.1:14580 >"$work/migrate.out" 2>&1 \
    || { cat "$work/migrate.out" >&2; fail "keelctl migrate"; }
start_keel m1 14579 14580 m1=http://127.0.0.1:14580
wait_up 127.0.0.1:14579
view http://127.0.0.1:12179 "$cs" | grep -av '^{"level":' >"$work/view.etcd"
view http://127.0.0.1:14579 "$cs" | grep -av '^{"level":' >"$work/view.migrated"
same "etcd and the keel migrated from a stopped etcd member's data dir" "$work/view.etcd" "$work/view.migrated"
ok "keelctl migrate --from-etcd-data-dir: the same keys, history, leases, users and roles"

echo "# damaged snapshot files"
cp "$work/keel.db" "$work/flipped.db"
printf '\x01' | dd of="$work/flipped.db" bs=1 seek=5000 conv=notrunc status=none
run "$KEELCTL" snapshot restore "$work/flipped.db" --data-dir "$work/bad1"
[ "$rc" = 1 ] && [ "$(echo "$out" | wc -l)" = 1 ] || fail "a flipped byte: rc $rc, $out"
case "$out" in "Error: expected sha256 "*) ;; *) fail "a flipped byte: $out" ;; esac
[ ! -e "$work/bad1" ] && [ ! -e "$work/bad1.restore-tmp" ] || fail "a refused restore left a data dir"
head -c 10000 "$work/keel.db" >"$work/short.db"
run "$KEELCTL" snapshot restore "$work/short.db" --data-dir "$work/bad2"
[ "$rc" = 1 ] && [ "$out" = "Error: snapshot missing hash but --skip-hash-check=false" ] || fail "a truncated file: rc $rc, $out"
run "$KEELCTL" snapshot restore "$work/short.db" --skip-hash-check --data-dir "$work/bad3"
[ "$rc" = 1 ] && [ "$(echo "$out" | wc -l)" = 1 ] || fail "a truncated file with --skip-hash-check: rc $rc, $out"
[ ! -e "$work/bad2" ] && [ ! -e "$work/bad3" ] || fail "a refused restore left a data dir"
run "$KEELCTL" snapshot restore "$work/keel.db" --data-dir "$work/q1"
[ "$rc" = 1 ] && [ "$out" = "Error: data-dir \"$work/q1\" exists" ] || fail "restore over an existing data dir: rc $rc, $out"
ok "damaged files are refused in one line, no data dir left: '$(echo "$out")'"

echo "backup.sh: $passed checks passed"
