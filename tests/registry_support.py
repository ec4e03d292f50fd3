"""A small, throttled image registry on 127.0.0.1 for pull tests (no network needed).

It serves images exported with `docker save` under the registry v2 API: `/v2/`,
`/v2/<name>/manifests/<tag or digest>` (a schema-2 manifest) and `/v2/<name>/blobs/<digest>`
(the config, and gzipped layers sent at `rate` bytes per second). dockerd pulls from registries
on 127.0.0.0/8 without TLS, so `127.0.0.1:<port>/<name>:<tag>` is an ordinary image reference.

Test images are built from the stand-in agent image plus a layer of random bytes (so the
daemon has to download it) and removed from the daemon once exported: the daemon must not
already hold what the registry serves.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHUNK = 8192


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class ServedImage:
    manifest: bytes
    digest: str
    blobs: dict[str, bytes]

    @property
    def config_digest(self) -> str:
        return json.loads(self.manifest)["config"]["digest"]

    @property
    def layer_bytes(self) -> int:
        manifest = json.loads(self.manifest)
        return sum(layer["size"] for layer in manifest["layers"])


def export_image(client, image: str) -> ServedImage:
    """The image as a registry serves it, from the daemon's `docker save` export."""
    raw = b"".join(client.api.get_image(image))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        index = json.load(tar.extractfile("manifest.json"))[0]
        config = tar.extractfile(index["Config"]).read()
        blobs = {_sha256(config): config}
        layers = []
        for member in index["Layers"]:
            # mtime 0: the same layer always compresses to the same digest.
            packed = gzip.compress(tar.extractfile(member).read(), compresslevel=1, mtime=0)
            digest = _sha256(packed)
            blobs[digest] = packed
            layers.append({"mediaType": LAYER_GZIP, "size": len(packed), "digest": digest})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": _sha256(config)},
        "layers": layers,
    }).encode()
    return ServedImage(manifest=manifest, digest=_sha256(manifest), blobs=blobs)


_DOCKERFILE = """\
FROM {base}
COPY payload /payload
RUN echo 'chrome vnc {marker}' > /www/chrome/index.html \\
 && echo 'terminal vnc {marker}' > /www/terminal/index.html
"""


def build_test_image(client, base: str, tag: str, *, payload_bytes: int, marker: str) -> None:
    """A stand-in agent whose pages say `marker`, with `payload_bytes` of incompressible data."""
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "payload").write_bytes(os.urandom(payload_bytes))
        Path(ctx, "Dockerfile").write_text(_DOCKERFILE.format(base=base, marker=marker))
        client.images.build(path=ctx, tag=tag, rm=True, forcerm=True)


@dataclass
class TestRegistry:
    """A registry v2 on 127.0.0.1 serving `images` (name -> tag -> ServedImage), throttled.

    `requests` records (method, path) of every request. With `credentials` set, every request
    without that user and password is answered 401 with a Basic challenge, as a private
    registry does.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    rate: int = 1_000_000
    credentials: tuple[str, str] | None = None
    images: dict[str, dict[str, ServedImage]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ref(self, name: str, tag: str) -> str:
        return f"{self.host}/{name}:{tag}"

    def add(self, name: str, tag: str, image: ServedImage) -> str:
        self.images.setdefault(name, {})[tag] = image
        return self.ref(name, tag)

    def blob_gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/blobs/" in path]

    def start(self) -> TestRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: pytest shows failures, not access logs
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _send(self, code: int, data: bytes, headers: dict[str, str], body: bool,
                      throttle: bool = False):
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.end_headers()
                if not body:
                    return
                if not throttle:
                    self.wfile.write(data)
                    return
                started = time.monotonic()
                for offset in range(0, len(data), CHUNK):
                    self.wfile.write(data[offset:offset + CHUNK])
                    ahead = (offset + CHUNK) / registry.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

            def _error(self, code: int, kind: str, body: bool, extra: dict | None = None):
                data = json.dumps({"errors": [{"code": kind, "message": kind.lower()}]}).encode()
                self._send(code, data, {"Content-Type": "application/json", **(extra or {})},
                           body)

            def _serve(self, body: bool):
                with registry._lock:
                    registry.requests.append((self.command, self.path))
                try:
                    if registry.credentials and not self._authorized():
                        self._error(401, "UNAUTHORIZED", body,
                                    {"WWW-Authenticate": 'Basic realm="claworc-test"'})
                        return
                    self._route(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away mid-download: what a cancelled pull does

            def _authorized(self) -> bool:
                user, password = registry.credentials
                expected = base64.b64encode(f"{user}:{password}".encode()).decode()
                return self.headers.get("Authorization", "") == f"Basic {expected}"

            def _route(self, body: bool):
                path = self.path.split("?")[0]
                if path in ("/v2/", "/v2"):
                    self._send(200, b"{}", {"Content-Type": "application/json"}, body)
                    return
                if not path.startswith("/v2/"):
                    self._error(404, "NOT_FOUND", body)
                    return
                rest = path[len("/v2/"):]
                for kind in ("/manifests/", "/blobs/"):
                    if kind in rest:
                        name, ref = rest.rsplit(kind, 1)
                        break
                else:
                    self._error(404, "NOT_FOUND", body)
                    return
                tags = registry.images.get(name, {})
                if kind == "/manifests/":
                    found = tags.get(ref) or next(
                        (img for img in tags.values() if img.digest == ref), None)
                    if found is None:
                        self._error(404, "MANIFEST_UNKNOWN", body)
                        return
                    self._send(200, found.manifest, {"Content-Type": MANIFEST_V2,
                                                     "Docker-Content-Digest": found.digest}, body)
                    return
                blob = next((img.blobs[ref] for img in tags.values() if ref in img.blobs), None)
                if blob is None:
                    self._error(404, "BLOB_UNKNOWN", body)
                    return
                self._send(200, blob, {"Content-Type": "application/octet-stream",
                                       "Docker-Content-Digest": ref}, body, throttle=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="test-registry").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def remove_image(client, ref: str) -> None:
    """Remove an image this test made (by its reference); already gone is fine."""
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.api.remove_image(ref, force=True)


def make_served_image(client, base: str, *, payload_bytes: int, marker: str) -> ServedImage:
    """Build a test image, export it for the registry and remove it from the daemon."""
    tag = f"claworc-pull-src:{marker}"
    build_test_image(client, base, tag, payload_bytes=payload_bytes, marker=marker)
    try:
        return export_image(client, tag)
    finally:
        remove_image(client, tag)

