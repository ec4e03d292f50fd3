"""Loaded as a pytest plugin (`-p tests.testenv`) so it runs before pytest-django reads settings.

The suite runs on the same environment variables as production, with test values.
"""

import os
import tempfile

DATA_DIR = tempfile.mkdtemp(prefix="claworc-test-data-")
DATA_DIR = tempfile.mkdtemp(prefix="claworc-test-data-")
TEST_ENV = {
    "SECRET_KEY": "claworc-test-secret-key",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
    "CLAWORC_DATA_DIR": DATA_DIR,
    "CLAWORC_DOCKER_CONFIG_DIR": os.path.join(DATA_DIR, "configs"),
    # This kernel refuses privileged containers (see docs/development.md).
    "CLAWORC_DOCKER_PRIVILEGED": "false",
    # The busybox stand-in agent ignores SIGTERM as PID 1; an init forwards it.
    "CLAWORC_DOCKER_INIT": "true",
    "CLAWORC_NODE_IP": "127.0.0.1",
    "CLAWORC_ENCRYPTION_KEY": "y9v4m3b0l9cH3A3dB2mYk1V3tW5nQ0xRzJ8sE6fG7hI=",
}
for _k, _v in TEST_ENV.items():
    os.environ.setdefault(_k, _v)

