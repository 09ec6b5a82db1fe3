#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 600), one after another, and prints
# executions, final corpus size and crashes per target. Needs nightly and cargo-fuzz.
#   fuzz/run-all.sh [SECONDS] [TARGET...]
# New corpus entries stay in fuzz/corpus/TARGET (untracked); crashes land in
# fuzz/artifacts/TARGET: commit them once fixed, tests/fuzz_corpus.rs replays them.
set -uo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build || exit 1
mkdir -p target/logs
failed=0
printf '%-16s %12s %8s %8s\n' target executions corpus crashes > target/logs/summary.txt
for t in "${targets[@]}"; do
  log=target/logs/$t.log
  before=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  after=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-16s %12s %8s %8s\n' "$t" "${execs:-?}" "${corpus:-?}" "$((after - before))" \
    | tee -a target/logs/summary.txt
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "  $t exited with $rc; see fuzz/$log" >&2
  fi
done
echo "summary: fuzz/target/logs/summary.txt"
exit $failed
