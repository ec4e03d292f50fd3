"""A stand-in agent image built locally (no registry can be reached): busybox httpd answering
on both VNC ports, like the real agent's noVNC servers."""

import contextlib
import shutil
import socket
import tempfile
from pathlib import Path

AGENT_IMAGE = "claworc-test-agent:1"

_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /root /www/chrome /www/terminal \\
 && echo 'chrome vnc' > /www/chrome/vnc.html && echo 'chrome vnc' > /www/chrome/index.html \\
 && echo 'terminal vnc' > /www/terminal/vnc.html \\
 && echo 'terminal vnc' > /www/terminal/index.html
EXPOSE 6081 6082
CMD ["/bin/sh", "-c", "httpd -p 6082 -h /www/terminal && exec httpd -f -p 6081 -h /www/chrome"]
"""


def build_agent_image(client, tag: str = AGENT_IMAGE) -> str:
    """Build the image once per machine; later calls reuse it."""
    import docker.errors

    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(busybox, Path(ctx) / "busybox")
        (Path(ctx) / "Dockerfile").write_text(_DOCKERFILE)
        client.images.build(path=ctx, tag=tag, rm=True, forcerm=True)
    return tag


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether a listening socket could take `port` now (Docker publishes on all interfaces)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def remove_instance_objects(client, name: str, config_dir=None) -> None:
    """Remove what a backend made for instance `name` (container, its four volumes, and the
    config directory under `config_dir`); what is already gone is fine. Tests call it only for
    names they made themselves: the daemon is shared."""
    import docker.errors

    from orchestrators.docker import volume_names

    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(name, force=True)
    for volume in volume_names(name).values():
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(volume, force=True)
    if config_dir is not None:
        shutil.rmtree(Path(config_dir) / name, ignore_errors=True)
