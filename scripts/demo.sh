#!/usr/bin/env bash
# README's first command (as root: `bash scripts/demo.sh`): on a fresh Debian 12 machine, installs
# what is missing, builds Ephemera and the function images (Debian packages only, no registry),
# then runs the quick `workloads` and `impact` suites in real containers on every /tmp target:
# ephemera (each container's /tmp its own Ephemera mount, served by a node daemon the bench
# starts), tmpfs, tmpfs-huge, overlay and disk. Ends with a short summary (Ephemera vs tmpfs and
# overlay, OOM kills avoided, the reports' paths) above one table (target × workload: time, ratios,
# OOM kills). A baseline OOM-killed (tmpfs, as expected where the files do not fit) is a result;
# any other failed step (Ephemera killed or failing, a target that cannot be set up, the time
# cap) makes the demo exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root

OUT=${EPHEMERA_DEMO_OUT:-/var/tmp/ephemera-demo}
PASSES=${EPHEMERA_DEMO_PASSES:-1}

bash scripts/setup.sh

mkdir -p "$OUT"
echo "==> machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"

for suite in workloads impact; do
  echo "==> ephemera bench $suite --quick --passes $PASSES"
  rm -f "$OUT/$suite.json"  # never summarize an earlier run's results
  rc=0
  node bin/ephemera.js bench "$suite" --quick --passes "$PASSES" \
    --json "$OUT/$suite.json" --report "$OUT/$suite" || rc=$?
  # Exit 1: some target failed a step; the summary below tells a baseline's OOM kill (a result)
  # from a real failure. Anything else (no Docker, interrupted) stops the demo here.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then exit "$rc"; fi
  if [ ! -f "$OUT/$suite.json" ]; then echo "demo: ephemera bench $suite wrote no $OUT/$suite.json" >&2; exit 1; fi
done

echo
echo "==> summary (median time; ratio > 1 = faster than the baseline; OOM kills counted from the container's cgroup)"
# Exit 1 when a step failed other than a baseline's OOM kill; the summary names it.
status=0
node bin/ephemera.js bench table --headline "$OUT/workloads.json" "$OUT/impact.json" || status=$?
exit "$status"
