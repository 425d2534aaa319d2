#!/bin/sh
# Builds the charged-copy helper (see charged-copy.c) into fuse-store/build/charged-copy.
# Static when the C library allows it, so it runs in any container image; dynamic otherwise.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../build"
mkdir -p "$out"
cc=${CC:-cc}
flags="-O2 -Wall -Wextra -Werror -std=c11"
if ! $cc $flags -static -o "$out/charged-copy.tmp" "$here/charged-copy.c" 2>/dev/null; then
  $cc $flags -o "$out/charged-copy.tmp" "$here/charged-copy.c"
fi
mv "$out/charged-copy.tmp" "$out/charged-copy"
echo "built $out/charged-copy"

# The connection holder (see holder.c): keeps a mount's /dev/fuse files across a daemon's death.
if ! $cc $flags -D_GNU_SOURCE -static -o "$out/ephemera-holder.tmp" "$here/holder.c" 2>/dev/null; then
  $cc $flags -D_GNU_SOURCE -o "$out/ephemera-holder.tmp" "$here/holder.c"
fi
mv "$out/ephemera-holder.tmp" "$out/ephemera-holder"
echo "built $out/ephemera-holder"
