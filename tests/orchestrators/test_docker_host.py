"""Where the Docker daemon sees the config dir of a dashboard running in a container."""

import os

import pytest

from orchestrators import docker_host
from orchestrators.base import FinalError
from orchestrators.docker_host import ConfigDirNotShared, candidate_ids, daemon_path

CID = "0cffbf925cbaf55543967a5874085b95c4f01482fa410bff971967ae2e3f3338"
OTHER = "d57bd23c748248d0f551ce471a7f971b03487ae153e84b09f098d8e2b26bc5e8"

# Shapes copied from `docker inspect` of a dashboard started like the seed's example.
VOLUME = {"Type": "volume", "Name": "claworc-data", "Driver": "local", "RW": True,
          "Source": "/var/lib/docker/volumes/claworc-data/_data", "Destination": "/app/data"}
SOCKET = {"Type": "bind", "Source": "/var/run/docker.sock",
          "Destination": "/var/run/docker.sock", "RW": True}


def test_named_volume_maps_to_its_host_path():
    path, what = daemon_path("/app/data/configs", [SOCKET, VOLUME])
    assert path == "/var/lib/docker/volumes/claworc-data/_data/configs"
    assert what == "volume claworc-data:/app/data"


def test_volume_without_source_uses_the_volume_mountpoint():
    mount = {**VOLUME, "Source": ""}
    seen = []

    def mountpoint(name):
        seen.append(name)
        return "/mnt/vols/claworc-data"

    path, _ = daemon_path("/app/data/configs", [mount], mountpoint)
    assert path == "/mnt/vols/claworc-data/configs"
    assert seen == ["claworc-data"]


def test_bind_mount_source_plus_the_rest():
    bind = {"Type": "bind", "Source": "/srv/claworc", "Destination": "/app/data", "RW": True}
    assert daemon_path("/app/data/x/configs/", [bind])[0] == "/srv/claworc/x/configs"
    # The config dir being the mount point itself.
    assert daemon_path("/app/data", [bind])[0] == "/srv/claworc"


def test_the_innermost_mount_wins():
    inner = {"Type": "bind", "Source": "/host/configs", "Destination": "/app/data/configs",
             "RW": True}
    assert daemon_path("/app/data/configs/a", [inner, VOLUME])[0] == "/host/configs/a"
    assert daemon_path("/app/data/configs/a", [VOLUME, inner])[0] == "/host/configs/a"


def test_a_sibling_with_a_common_prefix_is_not_a_parent():
    # /app/data-old is not inside /app/data.
    with pytest.raises(ConfigDirNotShared):
        daemon_path("/app/data-old/configs", [VOLUME])


def test_refuses_a_dir_on_no_mount_with_the_rule_and_the_fix():
    with pytest.raises(ConfigDirNotShared) as err:
        daemon_path("/tmp/configs", [SOCKET, VOLUME], container="container dash")
    message = str(err.value)
    assert "CLAWORC_DOCKER_CONFIG_DIR=/tmp/configs" in message
    assert "container dash" in message
    assert "same on both the host and inside the dashboard container" in message
    assert "-v claworc-data:/app/data" in message
    assert isinstance(err.value, FinalError)  # a task gives up with this message, no retries


def test_refuses_tmpfs_and_read_only_mounts():
    tmpfs = {"Type": "tmpfs", "Source": "", "Destination": "/run/cfg", "RW": True}
    with pytest.raises(ConfigDirNotShared, match="tmpfs mount at /run/cfg"):
        daemon_path("/run/cfg", [tmpfs])
    with pytest.raises(ConfigDirNotShared, match="read-only"):
        daemon_path("/app/data/configs", [{**VOLUME, "RW": False}])


def test_candidate_ids_from_mountinfo_cgroup_and_hostname():
    mountinfo = (
        "74 50 0:39 / / rw,relatime master:2 - overlay overlay rw\n"
        f"91 74 254:0 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw - ext4\n"
        f"92 74 254:0 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4\n"
    )
    cgroup_v1 = f"4:memory:/docker/{OTHER}\n0::/docker/{OTHER}\n"
    assert candidate_ids(mountinfo, cgroup_v1, CID[:12]) == [CID, OTHER]
    systemd = f"0::/system.slice/docker-{OTHER}.scope\n"
    assert candidate_ids("", systemd, "web-1") == [OTHER]
    # cgroup v2 with a private namespace shows only "0::/": the hostname is the last resort.
    assert candidate_ids("", "0::/\n", CID[:12]) == [CID[:12]]
    assert candidate_ids("", "0::/\n", "vm") == []


class _FakeAPI:
    base_url = "http+docker://localhost"

    def __init__(self, containers):
        self.containers = containers
        self.calls = 0

    def inspect_container(self, cid):
        import docker.errors

        self.calls += 1
        for attrs in self.containers:
            if attrs["Id"].startswith(cid) or attrs["Name"] == "/" + cid:
                return attrs
        raise docker.errors.NotFound(f"No such container: {cid}")

    def inspect_volume(self, name):
        return {"Mountpoint": f"/var/lib/docker/volumes/{name}/_data"}


class _FakeClient:
    def __init__(self, containers):
        self.api = _FakeAPI(containers)


@pytest.fixture
def as_container(monkeypatch):
    def set_identity(cid, hostname=None):
        mountinfo = f"92 74 254:0 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw\n"
        monkeypatch.setattr(
            docker_host, "_read",
            lambda path: mountinfo if path == "/proc/self/mountinfo" else "0::/\n",
        )
        monkeypatch.setattr(docker_host.socket, "gethostname", lambda: hostname or cid[:12])

    return set_identity


def test_resolve_in_a_container_of_this_daemon(as_container):
    as_container(CID)
    client = _FakeClient([{"Id": CID, "Name": "/claworc-dashboard", "Mounts": [SOCKET, VOLUME]}])
    path = docker_host.resolve("/app/data/configs", client)
    assert path == "/var/lib/docker/volumes/claworc-data/_data/configs"
    with pytest.raises(ConfigDirNotShared, match="container claworc-dashboard"):
        docker_host.resolve("/tmp/configs", client)


def test_resolve_outside_any_container_of_this_daemon_keeps_the_path(as_container, tmp_path):
    as_container(CID)
    client = _FakeClient([])  # the daemon does not know us: we run on its host
    assert docker_host.resolve(str(tmp_path / "configs"), client) == str(tmp_path / "configs")


def test_a_container_named_like_our_hostname_is_not_us(as_container):
    # Hostname "abcdefabcdef" matches some other container's NAME, not its id.
    as_container("", hostname="abcdefabcdef")
    other = {"Id": OTHER, "Name": "/abcdefabcdef", "Mounts": []}
    assert docker_host.resolve("/app/data/configs", _FakeClient([other])) == (
        "/app/data/configs"
    )


def test_override_wins_without_asking_the_daemon(as_container):
    as_container(CID)
    client = _FakeClient([{"Id": CID, "Name": "/d", "Mounts": []}])
    assert docker_host.resolve("/tmp/configs", client, override="/srv/cfg/") == "/srv/cfg"
    assert client.api.calls == 0


def test_host_config_dir_is_computed_once_per_process(as_container, monkeypatch):
    monkeypatch.setattr(docker_host, "_cache", {})
    as_container(CID)
    client = _FakeClient([{"Id": CID, "Name": "/d", "Mounts": [VOLUME]}])
    first = docker_host.host_config_dir("/app/data/configs", client)
    second = docker_host.host_config_dir("/app/data/configs/", client)
    assert first == second == "/var/lib/docker/volumes/claworc-data/_data/configs"
    assert client.api.calls == 1


@pytest.mark.docker
def test_on_this_host_the_daemon_sees_the_same_path(docker_client, tmp_path):
    # The suite runs beside the daemon, not in one of its containers.
    assert docker_host.resolve(str(tmp_path), docker_client) == os.path.abspath(tmp_path)
