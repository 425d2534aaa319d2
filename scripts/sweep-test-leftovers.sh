#!/usr/bin/env bash
# What a test run that was killed outright (SIGKILL, the machine restarted under it) left behind.
# Such a run cannot unmount: its FUSE mounts answer ENOTCONN forever, the tmpfs and loop-backed
# tiers under them stay mounted and attached, and a held memory tier waits for a daemon that never
# comes. Tests clean up after themselves, also when they fail; this covers the run that could not.
#
# Only the suite's own temp bases (ephemera-*-XXXXXX in /tmp and /var/tmp, or in the roots given
# as arguments) are touched, and only a base that holds a dead FUSE mount. A live run's mounts answer,
# except in a test that kills its daemon on purpose, until it mounts again: scripts/test.sh runs
# this before the suite, and no suite should start beside a running one.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
require_root
roots=("$@")
# The daemons' run dir (fusefs/memtier.ts, restart.ts); a test points it elsewhere.
run_dir=${EPHEMERA_RUN_DIR:-/run/ephemera}
# Dead daemons' memory tiers are swept machine-wide, so only for the whole machine (no roots given)
# or a run dir given as such: a test naming its own root must not race another test's killed daemon.
sweep_memory_tiers=0
if [ ${#roots[@]} -eq 0 ] || [ -n "${EPHEMERA_RUN_DIR:-}" ]; then sweep_memory_tiers=1; fi
[ ${#roots[@]} -gt 0 ] || roots=(/tmp /var/tmp)

# Mount points from /proc/self/mountinfo (field 5; octal escapes such as \040 decoded) that are
# $1 or lie under it, deepest first.
mounts_under() {
  awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r mp; do
    mp=$(printf '%b' "$mp")
    if [[ $mp == "$1" || $mp == "$1"/* ]]; then printf '%s\n' "$mp"; fi
  done | sort -r
}

declare -A dead=()
# mountinfo: id parent dev root MOUNT-POINT options... - FSTYPE source super-options
while IFS=' ' read -r _ _ _ _ mp rest; do
  case "$rest" in *' - fuse.ephemera '*) ;; *) continue ;; esac
  mp=$(printf '%b' "$mp")
  base=
  for root in "${roots[@]}"; do
    rest=${mp#"${root%/}"/}
    # A temp base as mkdtemp names it (ephemera-<what>-XXXXXX): never a fixed directory such as
    # /var/tmp/ephemera-demo, whose reports a killed demo's dead mount must not take with it.
    [ "$rest" != "$mp" ] && [[ ${rest%%/*} =~ ^ephemera-.+-[A-Za-z0-9]{6}$ ]] && base=${root%/}/${rest%%/*}
  done
  [ -n "$base" ] || continue
  if ! err=$(timeout 5 stat -- "$mp" 2>&1 >/dev/null) && [[ $err == *'not connected'* ]]; then dead[$base]=1; fi
done </proc/self/mountinfo

for base in "${!dead[@]}"; do
  echo "sweep-test-leftovers: $base holds the dead FUSE mount of a killed run; unmounting and removing it" >&2
  # Deepest first; lazily, since nothing may answer beneath a dead mount.
  mounts_under "$base" | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
  # A daemon holds its memory tier for a restart in <run dir>/held/<mount point, sanitized>
  # (fusefs/restart.ts), a sized one in <run dir>/held-mem-<the same name>.
  name=$(sed -E 's/[^A-Za-z0-9]+/_/g' <<<"$base")
  for held in "$run_dir"/held/"$name" "$run_dir"/held/"$name"_* "$run_dir"/held-mem-"$name" "$run_dir"/held-mem-"$name"_*; do
    [ -e "$held" ] || continue
    mounts_under "$held" | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
    rm -rf --one-file-system -- "$held" 2>/dev/null
  done
  losetup -a 2>/dev/null | grep -F "($base/" | cut -d: -f1 | while IFS= read -r dev; do losetup -d "$dev" 2>/dev/null; done
  rm -rf --one-file-system -- "$base" 2>/dev/null || echo "sweep-test-leftovers: could not remove all of $base" >&2
done

# A daemon's memory tier is <run dir>/mem-<its pid>[-<mount>] (fusefs/memtier.ts); one whose
# process is gone serves nobody. (A daemon sweeps these too, but only when it mounts with --size.)
for dir in "$run_dir"/mem-*; do
  [ "$sweep_memory_tiers" -eq 1 ] || break
  [[ ${dir#"$run_dir"/} =~ ^mem-([0-9]+)(-|$) ]] || continue
  kill -0 "${BASH_REMATCH[1]}" 2>/dev/null && continue
  echo "sweep-test-leftovers: $dir is the memory tier of a daemon that is gone; unmounting and removing it" >&2
  mounts_under "$dir" | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
  rm -rf --one-file-system -- "$dir" 2>/dev/null
done
exit 0
