#!/usr/bin/env bash
# README's first command: on a fresh Debian 12 machine (root), installs what is missing, builds
# Ephemera and the function images (Debian packages only, no registry), then runs the quick
# `workloads` and `impact` suites in real containers on every /tmp target: ephemera (each
# container's /tmp its own Ephemera mount, served by a node daemon the bench starts), tmpfs,
# tmpfs-huge, overlay and disk. Prints one table (target × workload: time, ratios, OOM kills) and
# where the reports are. An OOM kill on tmpfs is a result, not a demo failure.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${EPHEMERA_DEMO_OUT:-/var/tmp/ephemera-demo}
PASSES=${EPHEMERA_DEMO_PASSES:-1}

scripts/setup.sh

mkdir -p "$OUT"
echo "==> machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"

status=0
for suite in workloads impact; do
  echo "==> ephemera bench $suite --quick --passes $PASSES"
  rc=0
  node bin/ephemera.js bench "$suite" --quick --passes "$PASSES" \
    --json "$OUT/$suite.json" --report "$OUT/$suite" || rc=$?
  # Exit 1 means some target failed a step (e.g. tmpfs OOM-killed), which the table shows;
  # anything else (no Docker, interrupted) stops the demo.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then exit "$rc"; fi
  if [ "$rc" -eq 1 ]; then status=1; fi
done

echo
echo "==> results (median time; ratio > 1 = faster than the baseline; OOM kills counted from the container's cgroup)"
node bin/ephemera.js bench table "$OUT/workloads.json" "$OUT/impact.json"
echo
echo "reports: $OUT/workloads/report.html $OUT/impact/report.html (SVG charts in */charts/)"
[ "$status" -eq 0 ] || echo "(some targets failed steps; see the failures listed above)"
