"""`manage.py check_docker_host`: refuse to start when the Docker daemon cannot see the config dir.

The image's entrypoint runs it before web, worker or beat start (docs/docker.md).
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orchestrators import docker_host

PING_TIMEOUT = 10


class Command(BaseCommand):
    help = (
        "Check that the Docker daemon sees CLAWORC_DOCKER_CONFIG_DIR (a dashboard running in a "
        "container must keep it on a mounted volume) and print where. Exits 1 when it does not; "
        "does nothing when no Docker daemon answers."
    )

    def handle(self, *args, **options):
        import docker

        config_dir = settings.CLAWORC_DOCKER_CONFIG_DIR
        override = getattr(settings, "CLAWORC_DOCKER_HOST_CONFIG_DIR", "") or None
        try:
            if settings.CLAWORC_DOCKER_HOST:
                client = docker.DockerClient(
                    base_url=settings.CLAWORC_DOCKER_HOST, timeout=PING_TIMEOUT
                )
            else:
                client = docker.from_env(timeout=PING_TIMEOUT)
            client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "no daemon to check against"
            self.stdout.write(
                f"Docker not available ({exc}); not checking CLAWORC_DOCKER_CONFIG_DIR."
            )
            return
        try:
            path = docker_host.resolve(config_dir, client, override=override)
        except docker_host.ConfigDirNotShared as exc:
            raise CommandError(str(exc)) from None
        finally:
            client.close()
        self.stdout.write(f"CLAWORC_DOCKER_CONFIG_DIR={config_dir} is {path} on the Docker daemon.")
