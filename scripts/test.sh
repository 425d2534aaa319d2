#!/usr/bin/env bash
# CI entry point: set the machine up, run the whole test suite, stop the dockerd this run started.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
export CI=${CI:-true}  # fixed model-test seeds (test/model/suite.ts), as in the project CI
export DOCKERD_PID_FILE=${DOCKERD_PID_FILE:-/run/ephemera-dockerd.pid}

# A live dockerd in a pid file that predates this run belongs to another session: leave it alone.
# A stale pid file (its process is gone or is no dockerd) is dropped so it cannot mislead us.
if [ -e "$DOCKERD_PID_FILE" ] && [ "$(cat "/proc/$(cat "$DOCKERD_PID_FILE")/comm" 2>/dev/null)" != dockerd ]; then
  rm -f "$DOCKERD_PID_FILE"
fi
if [ -e "$DOCKERD_PID_FILE" ]; then ours=0; else ours=1; fi
cleanup() {
  if [ "$ours" -eq 1 ]; then bash scripts/stop-dockerd.sh; fi
}
trap cleanup EXIT

bash scripts/setup.sh || exit $?
# The folder graph first (layers, cycles, index.ts surfaces; .dependency-cruiser.cjs): cheap, and a
# violation fails the run before the suite.
npm run lint:deps || exit $?
bash scripts/sweep-test-leftovers.sh
npm test
exit $?
