# Sourced by the scripts in scripts/ (never run on its own): what they share.

# Every script here needs root: it installs packages, mounts FUSE file systems, makes cgroups or
# talks to dockerd. A fresh Debian machine has no sudo, so the message says how to become root
# there (`su -`), and names sudo only where it is installed.
require_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  local script repo
  script=scripts/$(basename "${BASH_SOURCE[1]:-$0}")
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  {
    echo "$script must run as root (packages, FUSE mounts, cgroups, dockerd)."
    echo "run as root: bash $script"
    echo "you are $(id -un): become root with \`su -\` (it asks for root's password), then: cd $repo && bash $script"
    if command -v sudo >/dev/null 2>&1; then echo "or, since sudo is installed here: sudo bash $script"; fi
  } >&2
  exit 1
}
