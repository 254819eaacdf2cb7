#!/usr/bin/env bash
# The etcdctl command sequence run against real etcd and against keel; run.sh compares
# the normalized outputs line by line. Usage: suite.sh ENDPOINT
E="etcdctl --endpoints=$1"
step() { echo "### $*"; }
set +e
step put; $E put foo bar; $E put foo2 bar2; $E put fop x; $E put zoo y
step get; $E get foo
step get prefix; $E get foo --prefix
step get limit json; $E get foo --prefix --limit 1 -w json
step get from-key; $E get --from-key fop
step get rev; $E get foo --rev 2
step get sort; $E get foo --prefix --sort-by=MODIFY --order=DESCEND
step get sort value; $E get "" --from-key --sort-by=VALUE --order=ASCEND
step get keys-only; $E get foo --prefix --keys-only
step get json; $E get foo -w json
step get missing; $E get nothere; $E get nothere -w json
step put prev-kv; $E put foo baz --prev-kv
step del; $E del fop
step del prefix prev-kv; $E del foo --prefix --prev-kv
step txn; $E put k1 v1
printf 'mod("k1") > "0"\n\nput k1 "overwrote"\n\nput k1 "created"\n\n' | $E txn
printf 'mod("k1") > "0"\n\nput k1 "overwrote"\n\nput k1 "created"\n\n' | $E txn -w json
printf 'value("k1") = "nope"\n\nput k1 "a"\n\nget k1\n\n' | $E txn
printf 'version("k1") = "3"\ncreate("k1") > "1"\n\nget k1 --prefix\ndel nothere\n\nput x y\n\n' | $E txn -w json
step watch rev prev-kv; timeout 2 $E watch k1 --rev 1 --prev-kv
step watch prefix; timeout 2 $E watch k --prefix --rev 5
step watch json; timeout 2 $E watch zoo --rev 1 -w json | sed 's/"raft_term":[0-9]*/"raft_term":T/'
step lease
L=$($E lease grant 100 | awk '{print $2}')
echo "granted: ${#L} hex digits"
$E put --lease=$L leased v
$E lease keep-alive --once $L
$E lease timetolive $L --keys
$E lease timetolive $L -w json | sed 's/"ttl":[0-9]*/"ttl":T/'
$E lease list
$E lease revoke $L
$E get leased
$E lease timetolive $L
$E lease revoke $L
step lease missing; $E lease timetolive 1234abcd; $E lease keep-alive --once 1234abcd
step compaction; $E compaction 3
$E get foo --rev 2
$E compaction 2
step alarm; $E alarm list
step defrag; $E defrag
step health; $E endpoint health
step hash; $E endpoint hashkv -w json | sed 's/"hash":[0-9]*/"hash":H/'
step lock; $E lock mylock echo locked-run
step elect; timeout 2 $E elect myelection alice; $E get myelection --prefix --keys-only | sed 's/\/[0-9a-f]*$/\/LEASE/'
step end
