#!/usr/bin/env bash
# Builds the stand-in agent image that really serves noVNC, like the OpenClaw agent: Chrome's
# desktop on 6081 and the terminal's on 6082, each an Xvfb display shared by x11vnc and served by
# websockify with Debian's noVNC pages. No image can be pulled here, so it is made from Debian's
# packages with debootstrap and `docker import`, as scripts/build-base-image.sh does.
# Cached: does nothing when the image exists (the tag's number changes with what it contains).
#
#   scripts/build-novnc-agent-image.sh [IMAGE]     (default claworc-novnc-agent:bookworm-2)
#
# MIRROR (environment) overrides the Debian mirror; by default the one this machine's apt uses.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/debian-rootfs.sh
image="${1:-claworc-novnc-agent:bookworm-2}"

rootfs_prepare "$image" claworc-novnc
echo "debootstrap bookworm from $mirror, then xvfb, x11vnc, novnc, websockify (a few minutes)..." >&2
rootfs_debootstrap
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

rootfs_import "$image" \
  --change 'EXPOSE 6081 6082' \
  --change 'CMD ["/usr/local/bin/claworc-novnc-agent"]'
