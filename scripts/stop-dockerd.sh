#!/usr/bin/env bash
# Stops the dockerd that scripts/setup.sh (or test/support/docker.ts) started, and nothing else:
# only the pid recorded in the pid file, and only if that pid is still a dockerd.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
require_root
DOCKERD_PID_FILE=${DOCKERD_PID_FILE:-/run/ephemera-dockerd.pid}

if [ ! -f "$DOCKERD_PID_FILE" ]; then
  echo "stop-dockerd: no $DOCKERD_PID_FILE, we started no dockerd"
  exit 0
fi
pid=$(cat "$DOCKERD_PID_FILE")
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "dockerd" ]; then
  echo "stop-dockerd: pid $pid is no longer a dockerd; removing the stale pid file"
  rm -f "$DOCKERD_PID_FILE"
  exit 0
fi
echo "stop-dockerd: stopping dockerd pid $pid"
kill -TERM "$pid"
for _ in $(seq 1 60); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
if kill -0 "$pid" 2>/dev/null; then
  echo "stop-dockerd: dockerd $pid ignored SIGTERM for 30 s, killing it"
  kill -KILL "$pid"
fi
rm -f "$DOCKERD_PID_FILE"
