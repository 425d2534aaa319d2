#!/usr/bin/env bash
# Every benchmark suite, one after another (they must not share the machine), each with its JSON
# and report in $OUT, then the summary (Ephemera vs tmpfs and overlay, OOM kills avoided) above
# one table. `--quick` runs the whole set in ~10 minutes; without it, the full grids with each
# suite's default passes take just under 2 hours on a 2-vCPU VM. Extra arguments go to every
# suite (e.g. --passes 3). As root; run scripts/setup.sh first (or the demo).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
OUT=${EPHEMERA_BENCH_OUT:-/var/tmp/ephemera-bench-all}
SUITES=${EPHEMERA_BENCH_SUITES:-"fio policy schedule mix overhead workloads sharing functionbench impact"}
mkdir -p "$OUT"
status=0
jsons=()
for suite in $SUITES; do
  start=$(date +%s)
  echo "==> $(date -u +%T) ephemera bench $suite $*"
  node bin/ephemera.js bench "$suite" "$@" --json "$OUT/$suite.json" --report "$OUT/$suite" >"$OUT/$suite.txt"
  rc=$?
  echo "<== $suite: exit $rc after $(( $(date +%s) - start )) s (table: $OUT/$suite.txt)"
  # 1 = some target failed a step (e.g. tmpfs OOM-killed), which the table shows; worse stops here.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then exit "$rc"; fi
  [ "$rc" -eq 1 ] && status=1
  [ -f "$OUT/$suite.json" ] && jsons+=("$OUT/$suite.json")
done
echo
node bin/ephemera.js bench table --headline "${jsons[@]}"
exit "$status"
