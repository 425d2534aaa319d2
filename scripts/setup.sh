#!/usr/bin/env bash
# Prepares this machine for Ephemera's build, tests and benches. Idempotent; run as root.
# Installs missing Debian packages, the npm dependencies, builds everything, starts dockerd when none
# answers (recording that we started it, so scripts/stop-dockerd.sh stops only that one) and builds
# the function images from Debian packages (no registry is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root

DOCKERD_PID_FILE=${DOCKERD_PID_FILE:-/run/ephemera-dockerd.pid}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/ephemera-dockerd.log}
PACKAGES=(build-essential python3 g++ make fio fuse3 docker.io docker-compose debootstrap busybox-static attr iproute2 procps psmisc chromium liburing-dev e2fsprogs util-linux)

now_ms() { date +%s%3N; }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d s' $((ms / 1000)) $(((ms % 1000) / 100)); }
setup_started=$(now_ms)
step_started=
step() { step_started=$(now_ms); echo "==> $*"; }
done_step() { echo "    done in $(since "$step_started")"; }

step "Debian packages"
missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$pkg"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "    all ${#PACKAGES[@]} present, apt skipped"
else
  echo "    installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
done_step

step "FUSE over io_uring"
# The kernel (6.14+, CONFIG_FUSE_IO_URING) ships it switched off: the fuse module offers
# FUSE_OVER_IO_URING in INIT only while this parameter is Y. Mounts with --transport auto then
# serve requests through io_uring rings (one commit-and-fetch per request instead of a read and a
# write on /dev/fuse; see fuse-store/src/transport_uring.h); without it they use /dev/fuse.
ENABLE_URING=/sys/module/fuse/parameters/enable_uring
if [ -e "$ENABLE_URING" ]; then
  if echo Y >"$ENABLE_URING" 2>/dev/null; then
    echo "    enable_uring=$(cat "$ENABLE_URING")"
  else
    echo "    cannot write $ENABLE_URING; mounts use /dev/fuse"
  fi
else
  echo "    this kernel has no FUSE over io_uring; mounts use /dev/fuse"
fi
done_step

step "npm dependencies"
# npm ci wipes node_modules; only do it when the lockfile changed since the last install.
if [ -d node_modules ] && [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "    node_modules is up to date with package-lock.json, npm ci skipped"
elif ! npm ci --no-audit --no-fund >/tmp/ephemera-npm-ci.log 2>&1; then
  grep -m 3 'npm error [^ ]' /tmp/ephemera-npm-ci.log | sed 's/^/    /' || true
  # npm ci refuses a lockfile that is out of sync with package.json (e.g. optional platform
  # packages missing from it); install from package.json without rewriting the lockfile.
  echo "    npm ci refused the lockfile; falling back to npm install --no-save"
  npm install --no-audit --no-fund --no-save
fi
done_step

step "npm run build (native addon + TypeScript)"
npm run build
done_step

step "dockerd"
if docker info >/dev/null 2>&1; then
  echo "    a dockerd already answers; leaving it alone"
else
  echo "    starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd >>"$DOCKERD_LOG" 2>&1 &
  echo $! >"$DOCKERD_PID_FILE"
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DOCKERD_PID_FILE")" 2>/dev/null; then
      echo "dockerd exited; last log lines:" >&2
      tail -20 "$DOCKERD_LOG" >&2
      rm -f "$DOCKERD_PID_FILE"
      exit 1
    fi
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not answer within 60 s; see $DOCKERD_LOG" >&2
    exit 1
  fi
  echo "    dockerd pid $(cat "$DOCKERD_PID_FILE") recorded in $DOCKERD_PID_FILE"
fi
done_step

step "function images (debootstrap + docker import; reused when the recipe hash is present)"
node bin/ephemera.js images build
done_step

echo "==> setup finished in $(since "$setup_started")"
