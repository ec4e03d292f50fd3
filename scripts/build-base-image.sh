#!/usr/bin/env bash
# Builds a Debian bookworm base image (Python 3.11) locally with debootstrap and `docker import`,
# for machines that cannot pull python:3.11-slim. Cached: does nothing when the image exists.
#
#   scripts/build-base-image.sh [IMAGE]        (default claworc-base:bookworm)
#   docker build --build-arg BASE_IMAGE=claworc-base:bookworm -t claworc-dashboard .
#
# MIRROR (environment) overrides the Debian mirror; by default the one this machine's apt uses.
set -euo pipefail
image="${1:-claworc-base:bookworm}"

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
  # deb822 sources (URIs: …) first, then one-line sources (deb URL suite …); skip security.
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

work="$(mktemp -d /tmp/claworc-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "debootstrap bookworm from $mirror (about a minute)..." >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

# Registries may be reached through a TLS proxy whose CA only this host trusts: the image trusts
# the same bundle, and pip in the image is told to use it.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
{
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  # A package index this host's pip is configured with (a mirror or proxy) applies inside too;
  # local file:// indexes cannot be seen from the build and are left out.
  index="${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}"
  case "$index" in http://*|https://*) echo "index-url = $index" ;; esac
} >"$rootfs/etc/pip.conf"
# Leave apt caches out: the image only needs what is installed.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$image" >/dev/null
echo "$image"
