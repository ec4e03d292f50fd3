"""Where the Docker daemon sees CLAWORC_DOCKER_CONFIG_DIR, for a dashboard that runs in a container.

Bot containers bind-mount `<config_dir>/<name>/clawdbot.json`, and the daemon resolves a bind
source on ITS filesystem, not the dashboard's. When the dashboard runs on the host, both are the
same. When it runs as a container of that same daemon (the socket mounted), the config directory
must lie on one of its mounts: a bind mount (host path = Source + the rest of the path) or a named
volume (host path = the volume's Mountpoint + the rest, which is how `-v claworc-data:/app/data`
works). A config directory in the container's own layer is invisible to the daemon: the daemon
would bind an empty directory in its place, so start-up refuses with `ConfigDirNotShared`.

  resolve(config_dir, client, override=None) -> str   the daemon-side path, or ConfigDirNotShared
  host_config_dir(config_dir, client) -> str            the same, computed once per process
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .base import FinalError

logger = logging.getLogger(__name__)

SEED_RULE = (
    "CLAWORC_DOCKER_CONFIG_DIR must point to a path that is the same on both the host and inside "
    "the dashboard container, since config files are bind-mounted from the host into bot "
    "containers"
)
_HOW_TO_FIX = (
    "Put it on the mounted data volume (e.g. `-v claworc-data:/app/data` with "
    "CLAWORC_DOCKER_CONFIG_DIR=/app/data/configs), or bind-mount a host directory that contains "
    "it, or set CLAWORC_DOCKER_HOST_CONFIG_DIR to the path the Docker daemon sees it at."
)

# Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from
# <docker root>/containers/<id>/; cgroup v1 and the systemd driver name the id in the cgroup path.
_MOUNTINFO_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\b")
_CGROUP_ID = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?\s*$", re.MULTILINE)
_SHORT_ID = re.compile(r"^[0-9a-f]{12,64}$")


class ConfigDirNotShared(FinalError):
    """The config directory is not visible to the Docker daemon; bots would get no config."""


def candidate_ids(mountinfo: str, cgroup: str, hostname: str) -> list[str]:
    """Ids (full or short) this process's container may have, most reliable first."""
    found: list[str] = []
    for match in [*_MOUNTINFO_ID.finditer(mountinfo), *_CGROUP_ID.finditer(cgroup)]:
        if match.group(1) not in found:
            found.append(match.group(1))
    # The default hostname of a container is the first 12 characters of its id.
    if _SHORT_ID.match(hostname) and not any(i.startswith(hostname) for i in found):
        found.append(hostname)
    return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def own_container(client) -> Mapping[str, Any] | None:
    """Inspect data of the container this process runs in, if it is one of `client`'s daemon.

    None means "not a container of this daemon" (running on the host, or in a container of some
    other runtime whose filesystem the daemon shares).
    """
    import docker.errors

    ids = candidate_ids(
        _read("/proc/self/mountinfo"), _read("/proc/self/cgroup"), socket.gethostname()
    )
    for cid in ids:
        try:
            attrs = client.api.inspect_container(cid)
        except docker.errors.NotFound:
            continue
        # A short id could also be some other container's name: only an id prefix counts.
        if attrs.get("Id", "").startswith(cid):
            return attrs
    return None


def _inside(path: str, mount_point: str) -> bool:
    mount_point = mount_point.rstrip("/") or "/"
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def daemon_path(
    path: str,
    mounts: Iterable[Mapping[str, Any]],
    volume_mountpoint: Callable[[str], str | None] = lambda name: None,
    *,
    container: str = "the dashboard container",
) -> tuple[str, str]:
    """(daemon-side path, what it lies on) for `path` inside a container with these `Mounts`.

    The mount with the longest Destination containing `path` wins (mounts nest). Raises
    ConfigDirNotShared when `path` is on no mount, on a tmpfs, or on a read-only mount.
    """
    path = os.path.normpath(path)
    best = None
    for mount in mounts:
        dest = mount.get("Destination") or ""
        if dest and _inside(path, dest) and (best is None or len(dest) > len(best["Destination"])):
            best = mount
    if best is None:
        raise ConfigDirNotShared(
            f"CLAWORC_DOCKER_CONFIG_DIR={path} lies in {container}'s own filesystem, on no volume "
            "or bind mount, so the Docker daemon cannot see the config files that bot containers "
            f"bind-mount, and bots would start with an empty config. {SEED_RULE}. {_HOW_TO_FIX}"
        )
    kind = best.get("Type", "")
    dest = best["Destination"]
    if kind not in {"bind", "volume"}:
        raise ConfigDirNotShared(
            f"CLAWORC_DOCKER_CONFIG_DIR={path} lies on a {kind or 'unknown'} mount at {dest} in "
            f"{container}, which the Docker daemon cannot bind-mount from. {SEED_RULE}. "
            f"{_HOW_TO_FIX}"
        )
    if best.get("RW") is False:
        raise ConfigDirNotShared(
            f"CLAWORC_DOCKER_CONFIG_DIR={path} lies on the read-only mount {dest} in {container}; "
            "the dashboard must write the config files there. Mount it read-write."
        )
    source = best.get("Source") or ""
    what = f"bind mount {source}:{dest}"
    if kind == "volume":
        name = best.get("Name", "")
        source = source or volume_mountpoint(name) or ""
        what = f"volume {name}:{dest}"
        if not source:
            raise ConfigDirNotShared(
                f"CLAWORC_DOCKER_CONFIG_DIR={path} lies on volume {name}, whose driver gives no "
                f"host path the daemon could bind-mount from. {_HOW_TO_FIX}"
            )
    rest = os.path.relpath(path, dest)
    return os.path.normpath(os.path.join(source, rest) if rest != "." else source), what


def resolve(config_dir: str, client, *, override: str | None = None) -> str:
    """The path at which `client`'s daemon sees `config_dir` (raises ConfigDirNotShared)."""
    if override:
        return os.path.normpath(override)
    config_dir = os.path.abspath(config_dir)
    attrs = own_container(client)
    if attrs is None:
        if os.path.exists("/.dockerenv"):
            logger.info(
                "running in a container that the Docker daemon does not list; assuming it sees "
                "CLAWORC_DOCKER_CONFIG_DIR=%s at the same path", config_dir,
            )
        return config_dir
    name = (attrs.get("Name") or "").lstrip("/") or attrs.get("Id", "")[:12]

    def volume_mountpoint(volume: str) -> str | None:
        import docker.errors

        try:
            return client.api.inspect_volume(volume).get("Mountpoint")
        except docker.errors.NotFound:
            return None

    host_path, what = daemon_path(
        config_dir, attrs.get("Mounts") or [], volume_mountpoint, container=f"container {name}"
    )
    logger.info(
        "CLAWORC_DOCKER_CONFIG_DIR=%s is %s on the Docker daemon (%s of container %s)",
        config_dir, host_path, what, name,
    )
    return host_path


_cache: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def host_config_dir(config_dir: str, client) -> str:
    """`resolve()` once per process for this config dir and daemon (raises ConfigDirNotShared)."""
    key = (os.path.abspath(config_dir), str(getattr(getattr(client, "api", None), "base_url", "")))
    with _lock:
        if key not in _cache:
            _cache[key] = resolve(config_dir, client)
        return _cache[key]
