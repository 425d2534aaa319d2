#!/bin/bash
# run.sh PASSES COUNT TARGET... ; TARGET = tmpfs | plain | WT:KIND (KIND = plain|q1|sized|sizeduring|restart|uring; WT = a built worktree)
# Needs root. sized = a mount as `ephemera node` makes it (own memory-tier tmpfs sized per admission, 1 GiB quota).
# Interleaved: each pass runs every target once, order rotated per pass. Prints files/s per run.
set -u
PASSES=$1; COUNT=$2; shift 2
HERE=$(cd "$(dirname "$0")" && pwd); W=${AB_WORK:-/tmp/ab-small}; B=$W/b; mkdir -p $B
cc -O2 -Wall -o $W/bench_io $HERE/../bench_io.c || exit 1
declare -A DIR PID
i=0
for t in "$@"; do
  i=$((i+1)); d=$B/$i; mkdir -p $d
  case $t in
    tmpfs) mkdir -p $d/m; mount -t tmpfs -o rw,nosuid,nodev,mode=1777 cptmp $d/m; DIR[$t]=$d/m;;
    plain) p=/var/lib/ephemera-bench/ab-plain-$i; mkdir -p $p; DIR[$t]=$p;;
    *) wt=${t%%:*}; kind=${t##*:}; mkdir -p $d/m
       case $kind in
         plain) node $wt/bin/ephemera.js mount $d/m --json > $d/out 2>$d/err & ;;
         q1) node $wt/bin/ephemera.js mount $d/m --json --queues 1 > $d/out 2>$d/err & ;;
         uring) node $wt/bin/ephemera.js mount $d/m --json --transport uring > $d/out 2>$d/err & ;;
         restart) node $wt/bin/ephemera.js mount $d/m --json --restartable > $d/out 2>$d/err & ;;
         sized) node $HERE/sized-mount.cjs $wt $d/m /run/ab-mem-$i > $d/out 2>$d/err & ;;
         sizeduring) T=uring node $HERE/sized-mount.cjs $wt $d/m /run/ab-mem-$i > $d/out 2>$d/err & ;;
       esac
       PID[$t]=$!
       for k in $(seq 100); do grep -q ready $d/out 2>/dev/null && break; sleep 0.1; done
       echo "# $t: $(head -c 300 $d/out)"
       DIR[$t]=$d/m;;
  esac
done
echo "${!PID[@]}" > /dev/null
for t in "${!PID[@]}"; do echo "# pid $t ${PID[$t]}"; done
targets=("$@"); n=${#targets[@]}
for p in $(seq $PASSES); do
  line="pass $p:"
  for j in $(seq 0 $((n-1))); do
    t=${targets[$(( (j + p) % n ))]}
    out=$($W/bench_io small ${DIR[$t]} $COUNT)
    fps=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f" % (r["files"]/(r["create_seconds"]+r["unlink_seconds"])))')
    line="$line  $t=$fps"
  done
  echo "$line"
done
# teardown
for t in "$@"; do
  case $t in tmpfs) umount ${DIR[$t]};; plain) rm -rf ${DIR[$t]};; esac
done
for t in "${!PID[@]}"; do kill -TERM ${PID[$t]}; done
for t in "${!PID[@]}"; do wait ${PID[$t]} 2>/dev/null; done
grep -h . $B/*/err 2>/dev/null | head -5
rm -rf $B
mount | grep -c "$B" 
