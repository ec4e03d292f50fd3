#!/usr/bin/env bash
# Builds a Debian bookworm base image (Python 3.11) locally with debootstrap and `docker import`,
# for machines that cannot pull python:3.11-slim. Cached: does nothing when the image exists.
#
#   scripts/build-base-image.sh [IMAGE]        (default claworc-base:bookworm)
#   docker build --build-arg BASE_IMAGE=claworc-base:bookworm -t claworc-dashboard .
#
# MIRROR (environment) overrides the Debian mirror; by default the one this machine's apt uses.
set -euo pipefail
source "$(dirname "$0")/debian-rootfs.sh"
image="${1:-claworc-base:bookworm}"

rootfs_prepare "$image" claworc-base
echo "debootstrap bookworm from $mirror (about a minute)..." >&2
rootfs_debootstrap --include=python3,python3-venv,ca-certificates

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

rootfs_import "$image" --change 'CMD ["/bin/bash"]'
