#!/usr/bin/env bash
# Builds the stand-in agent image that really serves noVNC, like the OpenClaw agent: Chrome's
# desktop on 6081 and the terminal's on 6082, each an Xvfb display shared by x11vnc and served by
# websockify with Debian's noVNC pages. No image can be pulled here, so it is made from Debian's
# packages with debootstrap and `docker import` (the same way as scripts/build-base-image.sh).
# Cached: does nothing when the image exists (the tag's number changes with what it contains).
#
#   scripts/build-novnc-agent-image.sh [IMAGE]     (default claworc-novnc-agent:bookworm-2)
#
# MIRROR (environment) overrides the Debian mirror; by default the one this machine's apt uses.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-claworc-novnc-agent:bookworm-2}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "debootstrap needs root (run as root, or: sudo $0 $image)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {print $2}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $2 !~ /^\[/ {print $2} $1 == "deb" && $2 ~ /^\[/ {print $3}' "$f"
  done
}
mirror="${MIRROR:-$(apt_mirror | grep -E '/debian/?$' | grep -v security | head -1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /tmp/claworc-novnc.XXXXXX)"
rootfs="$work/rootfs"
cleanup() {
  umount "$rootfs/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "debootstrap bookworm from $mirror, then xvfb, x11vnc, novnc, websockify (a few minutes)..." >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}
# The desktop packages go in with apt inside the new system (not debootstrap's --include, whose
# one-pass configuration of ~200 packages fails on some maintainer scripts), without recommends.
# xterm gives the terminal desktop something to show; the Chrome desktop shows X's root weave.
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c '
  apt-get update -qq &&
  apt-get install -y -qq --no-install-recommends xvfb x11vnc novnc websockify xterm xfonts-base procps' \
  >"$work/apt.log" 2>&1 || {
  tail -30 "$work/apt.log" >&2
  exit 1
}
umount "$rootfs/proc"
install -m 755 docker/novnc-agent/start.sh "$rootfs/usr/local/bin/claworc-novnc-agent"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'EXPOSE 6081 6082' \
  --change 'CMD ["/usr/local/bin/claworc-novnc-agent"]' \
  - "$image" >/dev/null
echo "$image"
