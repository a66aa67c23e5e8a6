#!/bin/bash
# Threads (README "Threads"): `porting translate` of the 500 shipped test lines on ende-sep model2, with
# torch's default threads, --threads 1 and --threads 2; on the machine as it is, then with one core kept
# busy by a shell loop. Prints one row per (machine, threads): two wall times and the ratio to the
# default's first run in the same condition. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PORTING=${PORTING:-.venv/bin/porting}
WORK=${WORK:-.build/bench-threads}
MODEL=$WORK/model2
[ -f "$MODEL/config.json" ] || "$PORTING" convert fairseq --checkpoint reference_runs/models/ende-sep/model2.pt \
    --data-dir reference_runs/models/ende-sep --out "$MODEL" -q
run() {
    local start end
    start=$(date +%s.%N)
    "$PORTING" translate --model "$MODEL" --input reference_runs/data/test.en -q "$@" > /dev/null
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.2f}')"
}
echo "machine | threads | run 1 (s) | run 2 (s) | run 1 / default's run 1"
for machine in idle busy; do
    busy=""
    if [ "$machine" = busy ]; then (while :; do :; done) & busy=$!; fi
    base=""
    for threads in default 1 2; do
        flags=(); [ "$threads" = default ] || flags=(--threads "$threads")
        a=$(run "${flags[@]}"); b=$(run "${flags[@]}")
        base=${base:-$a}
        echo "$machine | $threads | $a | $b | $(python3 -c "print(f'{$a / $base:.2f}')")"
    done
    [ -z "$busy" ] || kill "$busy"
done
