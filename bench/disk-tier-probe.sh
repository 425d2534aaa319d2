#!/bin/bash
# Measures the disk tier's layouts against a plain host directory (what overlay's upper directory
# is) under memory pressure: the impact program (2 files, fill, random 8 KiB reads, then writes) in
# a cgroup v1 memory cgroup of LIMIT_MIB, on each layout in turn, pass by pass (interleaved), so
# one run on a shared machine compares like with like. Not part of the test suite; run as root:
#
#   flock /var/tmp/bench.lock bash bench/disk-tier-probe.sh [PASSES] [FILE_MIB] [OPS] [LIMIT_MIB] [LAYOUTS...]
#
# Layouts: dir | tmpfs | loop-<dio|buf>-<nojournal|journal|writeback>[-<none|mq-deadline>][-4k]
#          | ephemera | ephemera-hint (`ephemera mount --cgroup` on the probe's cgroup, 12G quota as
#            `ephemera node` gives a container here; -hint adds --size-hint FILE_MIB)
#          | before-ephemera[-hint] (the same with the build at BEFORE_ROOT)
# Prints one JSON line per run: layout, pass, the program's fill/read/write seconds, and the
# cgroup's peak usage, failcnt and the page cache the root cgroup gained (charged outside).
set -euo pipefail
PASSES=${1:-2}
FILE_MIB=${2:-128}
OPS=${3:-500000}
LIMIT_MIB=${4:-150}
shift 4 2>/dev/null || shift $#
LAYOUTS=("$@")
[ ${#LAYOUTS[@]} -gt 0 ] || LAYOUTS=(dir loop-dio-nojournal loop-buf-nojournal loop-dio-journal)

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${PROBE_DIR:-/var/tmp/disk-tier-probe}
mkdir -p "$WORK"
BIN="$WORK/eph_work"
cc -O2 -o "$BIN" "$HERE/workloads/eph_work.c"
CG=/sys/fs/cgroup/memory/disk-tier-probe-$$
IMG_MIB=$((FILE_MIB * 2 * 2 + 64))

cleanup() {
  if mountpoint -q "$WORK/mnt" 2>/dev/null; then umount "$WORK/mnt" || umount -l "$WORK/mnt"; fi
  rm -f "$WORK/tier.img"
  rm -rf "$WORK/mnt" "$WORK/dir"
  [ -f "$WORK/eph.pid" ] && kill -TERM "$(cat "$WORK/eph.pid")" 2>/dev/null
  [ -d "$CG" ] && rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

setup() { # layout -> prints the directory to run in
  local layout=$1
  if [ "$layout" = dir ]; then
    mkdir -p "$WORK/dir" && echo "$WORK/dir"
    return
  fi
  if [ "$layout" = tmpfs ]; then
    mkdir -p "$WORK/mnt" && mount -t tmpfs -o size=1g probe "$WORK/mnt" && echo "$WORK/mnt"
    return
  fi
  if [[ $layout == ephemera* || $layout == before-ephemera* ]]; then
    local hint=() root="$HERE/.."
    [[ $layout == *-hint ]] && hint=(--size-hint "${FILE_MIB}M")
    # before-…: another build (BEFORE_ROOT, e.g. a copy of the previous dist/ and fuse-store/build)
    [[ $layout == before-* ]] && root=${BEFORE_ROOT:?before-ephemera needs BEFORE_ROOT}
    mkdir -p "$WORK/mnt" "$WORK/spill"
    node "$root/bin/ephemera.js" mount "$WORK/mnt" --size 12G --spill-dir "$WORK/spill" --cgroup "$CG" "${hint[@]}" --json \
      >"$WORK/eph.log" 2>&1 &
    echo $! >"$WORK/eph.pid"
    for _ in $(seq 100); do grep -q '"ready"' "$WORK/eph.log" 2>/dev/null && break; sleep 0.1; done
    grep -q '"ready"' "$WORK/eph.log" || { cat "$WORK/eph.log" >&2; exit 1; }
    echo "$WORK/mnt"
    return
  fi
  # A trailing -4k: the loop device's logical sectors are 4 KiB (the image's fs block), not 512 B.
  local sector=512
  if [[ $layout == *-4k ]]; then sector=4096; layout=${layout%-4k}; fi
  IFS=- read -r _ io fsopt sched <<<"$layout"
  local mkfs=(-q -F -m 0 -i 4096 -E lazy_itable_init=1,lazy_journal_init=1,nodiscard)
  local mopts=noinit_itable,nodiscard,noatime
  case $fsopt in
    nojournal) mkfs+=(-O ^has_journal) ;;
    journal) ;;
    writeback) mopts+=,data=writeback,nobarrier ;;
  esac
  rm -f "$WORK/tier.img"
  truncate -s "${IMG_MIB}M" "$WORK/tier.img"
  mkfs.ext4 "${mkfs[@]}" "$WORK/tier.img"
  local dev
  dev=$(losetup --find --show --sector-size "$sector" --direct-io=$([ "$io" = dio ] && echo on || echo off) "$WORK/tier.img")
  if [ -n "${sched:-}" ]; then echo "$sched" >"/sys/block/${dev#/dev/}/queue/scheduler"; fi
  mkdir -p "$WORK/mnt"
  mount -t ext4 -o "$mopts" "$dev" "$WORK/mnt"
  losetup -d "$dev" # autoclear on unmount
  echo "$WORK/mnt"
}

teardown() {
  if [ -f "$WORK/eph.pid" ]; then
    local pid
    pid=$(cat "$WORK/eph.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$WORK/eph.pid"
  fi
  if mountpoint -q "$WORK/mnt" 2>/dev/null; then umount "$WORK/mnt"; fi
  rm -f "$WORK/tier.img"
  rm -rf "$WORK/dir" "$WORK/mnt"
}

stat_mib() { awk -v k="$1" '$1==k{print int($2/1048576)}' "$CG/memory.stat"; }

for pass in $(seq 1 "$PASSES"); do
  for layout in "${LAYOUTS[@]}"; do
    mkdir "$CG"
    echo $((LIMIT_MIB << 20)) >"$CG/memory.limit_in_bytes"
    echo $((LIMIT_MIB << 20)) >"$CG/memory.memsw.limit_in_bytes" 2>/dev/null || true
    dir=$(setup "$layout")
    sync
    # The cgroup's peak shmem (the memory tier, charged to the writer) while the program runs.
    (peak_shmem=0; while [ -d "$CG" ]; do
      v=$(awk '$1=="total_shmem"{print int($2/1048576)}' "$CG/memory.stat" 2>/dev/null || echo 0)
      [ "${v:-0}" -gt "$peak_shmem" ] && peak_shmem=$v && echo "$v" >"$WORK/peak_shmem"
      sleep 0.2; done) &
    sampler=$!
    echo 0 >"$WORK/peak_shmem"
    out=$(bash -c "echo \$\$ >$CG/cgroup.procs; exec $BIN impact $dir $FILE_MIB $OPS")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    cache=$(stat_mib total_cache)
    shmem=$(stat_mib total_shmem)
    peak=$(cat "$CG/memory.max_usage_in_bytes")
    fail=$(cat "$CG/memory.failcnt")
    oom=$(awk '$1=="oom_kill"{print $2}' "$CG/memory.oom_control")
    rm -f "$dir"/output*.txt
    sync
    teardown
    moves=$(grep -o '"adapter":{[^}]*}' "$WORK/eph.log" 2>/dev/null || true)
    rm -f "$WORK/eph.log"
    rmdir "$CG"
    echo "{\"layout\":\"$layout\",\"pass\":$pass,\"file_mib\":$FILE_MIB,\"ops\":$OPS,\"limit_mib\":$LIMIT_MIB,\"run\":$out,\"peak_mib\":$((peak >> 20)),\"failcnt\":$fail,\"oom_kill\":${oom:-0},\"end_cache_mib\":$cache,\"end_shmem_mib\":$shmem,\"peak_shmem_mib\":$(cat "$WORK/peak_shmem")${moves:+,$moves}}"
  done
done
