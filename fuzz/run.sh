#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 20) from its
# seed corpus in corpus_seed/<target>; what a run finds goes to corpus/<target> (not
# committed). A crash fails the script after every target has run, printing the path of
# the reproducing input libFuzzer saved under artifacts/<target>/.
# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
set -uo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECONDS:-20}"
cargo fuzz build -s none || exit 1
failed=()
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t" "corpus_seed/$t"
    dict=()
    case "$t" in wal_decode) dict=(-dict=dict/wal.dict) ;; esac
    echo "-- $t (${secs}s)"
    start=$(date +%s)
    if ! cargo fuzz run -s none "$t" "corpus/$t" "corpus_seed/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"corpus/$t.log" 2>&1; then
        tail -n 40 "corpus/$t.log"
        for a in artifacts/"$t"/*; do
            [ -e "$a" ] && echo "FUZZ CRASH in $t: reproducing input saved at fuzz/$a (replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $t $a)"
        done
        failed+=("$t")
    else
        grep -E "stat::number_of_executed_units|stat::new_units_added" "corpus/$t.log" | tr '\n' ' '
        echo "($(( $(date +%s) - start ))s)"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: every target ran ${secs}s without a crash"
