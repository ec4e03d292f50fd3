# Sourced by the scripts that make images from Debian packages with debootstrap and
# `docker import` (machines here cannot pull images). Not run on its own.
#
#   source scripts/debian-rootfs.sh
#   rootfs_prepare IMAGE WORKDIR_PREFIX   # exits 0 if IMAGE exists; sets $work, $rootfs, $mirror
#   rootfs_debootstrap [debootstrap options]
#   rootfs_import IMAGE [--change …]
#
# MIRROR (environment) overrides the Debian mirror; by default the one this machine's apt uses.

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

rootfs_prepare() {
  local image="$1" prefix="$2"
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
  mirror="${MIRROR:-$(apt_mirror | grep -E '/debian/?$' | grep -v security | head -1)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  work="$(mktemp -d "/tmp/$prefix.XXXXXX")"
  rootfs="$work/rootfs"
  # A chroot step may have mounted /proc; an unmounted one must not stop the clean-up.
  trap 'umount "$rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
}

rootfs_debootstrap() {
  debootstrap --variant=minbase "$@" bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2
    exit 1
  }
}

rootfs_import() {
  local image="$1"
  shift
  # Leave apt caches out: the image only needs what is installed.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "$@" - "$image" >/dev/null
  echo "$image"
}
