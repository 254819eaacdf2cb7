"""Checks a Prometheus text exposition with the Prometheus project's own Python parser.

    metrics_check.py names KEEL_METRICS NAMES_FILE   every name in NAMES_FILE is a
                                                      sample name in KEEL_METRICS
    metrics_check.py same ETCD_METRICS KEEL_METRICS  every family both have has the same
                                                      type, label names and buckets

Either way the whole of each file must parse; the first problem is printed and the exit
code is 1.
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def families(path):
    with open(path) as f:
        text = f.read()
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


def declared_types(path):
    """The `# TYPE` lines, by the name as written (the parser drops a counter's
    `_total`, which would hide a counter that should be a gauge)."""
    with open(path) as f:
        return dict(l.split()[2:4] for l in f if l.startswith("# TYPE "))


def shape(fam):
    """(type, label names, histogram buckets) of a family."""
    labels = set()
    buckets = set()
    for s in fam.samples:
        labels |= set(s.labels) - {"le", "quantile"}
        if s.name.endswith("_bucket"):
            buckets.add(float(s.labels["le"]))
    return fam.type, sorted(labels), sorted(buckets)


def main():
    mode, a, b = sys.argv[1:4]
    if mode == "names":
        keel = families(a)
        have = {s.name for fam in keel.values() for s in fam.samples}
        with open(b) as f:
            wanted = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        missing = [n for n in wanted if n not in have]
        if missing:
            print("missing: " + " ".join(missing))
            return 1
        print(f"{len(wanted)} names present among {len(have)} sample names")
        return 0
    etcd_types, keel_types = declared_types(a), declared_types(b)
    for name in sorted(set(etcd_types) & set(keel_types)):
        if etcd_types[name] != keel_types[name]:
            print(f"{name}: TYPE {keel_types[name]}, etcd {etcd_types[name]}")
            return 1
    etcd, keel = families(a), families(b)
    both = sorted(set(etcd) & set(keel))
    for name in both:
        # A vector with no series yet shows no labels: compare only what both show.
        e, k = shape(etcd[name]), shape(keel[name])
        if e[0] != k[0]:
            print(f"{name}: type {k[0]}, etcd {e[0]}")
            return 1
        if e[1] and k[1] and e[1] != k[1]:
            print(f"{name}: labels {k[1]}, etcd {e[1]}")
            return 1
        if e[2] != k[2]:
            print(f"{name}: buckets {k[2]}, etcd {e[2]}")
            return 1
    print(f"{len(both)} families in both with the same type, labels and buckets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
