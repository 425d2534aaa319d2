#!/usr/bin/env bash
# What a test run that was killed outright (SIGKILL, the machine restarted under it) left behind.
# Such a run cannot unmount: its FUSE mounts answer ENOTCONN forever, the tmpfs and loop-backed
# tiers under them stay mounted and attached, and a held memory tier waits for a daemon that never
# comes. Tests clean up after themselves, also when they fail; this covers the run that could not.
#
# Only the suite's own temp bases (/tmp/ephemera-*, /var/tmp/ephemera-*) are touched, and only a
# base that holds a dead FUSE mount. A live run's mounts answer, except in a test that kills its
# daemon on purpose, for the moment until it mounts again: do not start a suite beside a running one.
set -uo pipefail

# Mount points from /proc/self/mountinfo (field 5; octal escapes such as \040 decoded).
mount_points() { awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r mp; do printf '%b\n' "$mp"; done; }

declare -A dead=()
while IFS= read -r line; do
  mp=$(printf '%b' "$(awk '{ print $5 }' <<<"$line")")
  case "$mp" in /tmp/ephemera-*|/var/tmp/ephemera-*) ;; *) continue ;; esac
  case "$line" in *' - fuse.ephemera '*) ;; *) continue ;; esac
  if ! err=$(timeout 5 stat -- "$mp" 2>&1 >/dev/null) && [[ $err == *'not connected'* ]]; then
    base=$(cut -d/ -f1-3 <<<"$mp")
    [ "${mp#/var/tmp/}" != "$mp" ] && base=$(cut -d/ -f1-4 <<<"$mp")
    dead[$base]=1
  fi
done </proc/self/mountinfo

for base in "${!dead[@]}"; do
  echo "sweep-test-leftovers: $base holds the dead FUSE mount of a killed run; unmounting and removing it" >&2
  # Deepest first; lazily, since nothing may answer beneath a dead mount.
  mount_points | grep -E "^$base(/|$)" | sort -r | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
  # A daemon holds its memory tier for a restart in /run/ephemera/held/<mount point, sanitized>
  # (fusefs/restart.ts), a sized one in /run/ephemera/held-mem-<the same name>.
  name=$(sed -E 's/[^A-Za-z0-9]+/_/g' <<<"$base")
  for held in "/run/ephemera/held/$name" "/run/ephemera/held-mem-$name"; do
    mount_points | grep -F -- "$held" | sort -r | while IFS= read -r mp; do umount -l -- "$mp" 2>/dev/null; done
    rm -rf --one-file-system -- "$held"* 2>/dev/null
  done
  losetup -a 2>/dev/null | grep -F "($base/" | cut -d: -f1 | while IFS= read -r dev; do losetup -d "$dev" 2>/dev/null; done
  rm -rf --one-file-system -- "$base" 2>/dev/null || echo "sweep-test-leftovers: could not remove all of $base" >&2
done
exit 0
