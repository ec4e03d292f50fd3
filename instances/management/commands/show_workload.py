"""Print what an instance gets on a backend, without applying, allocating or writing anything."""

import json

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from instances.keys import effective_env
from instances.models import Instance, PortAllocation
from instances.specs import spec_with
from orchestrators.base import DesktopAccess, FinalError
from orchestrators.registry import DOCKER, KUBERNETES, current_backend_name

#: What every API key value is shown as.
SECRET_PLACEHOLDER = "<redacted>"


class Command(BaseCommand):
    help = (
        "Print exactly what instance NAME gets on a backend, without applying anything: for "
        "Kubernetes, multi-document YAML of every object (PVCs, Secret, ConfigMap, Service, "
        "Deployment); for Docker, the container's create arguments, its volumes and its config "
        "file. API key values are replaced by " + SECRET_PLACEHOLDER + ". An instance with no "
        "port pair yet shows the first pair of CLAWORC_PORT_START, marked as a placeholder."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the instance's name, e.g. bot-mybot")
        parser.add_argument("--backend", choices=[DOCKER, KUBERNETES],
                            help="default: the backend in use (Kubernetes when none is chosen)")

    def handle(self, *args, name, backend=None, **options):
        instance = Instance.objects.filter(name=name).first()
        if instance is None:
            raise CommandError(f"No instance named {name!r}.")
        backend = backend or current_backend_name()
        if backend not in (DOCKER, KUBERNETES):
            backend = KUBERNETES
        ports = PortAllocation.objects.filter(instance=instance).first()
        placeholder_ports = ports is None
        if placeholder_ports:
            chrome, terminal = settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_START + 1
        else:
            chrome, terminal = ports.port_chrome, ports.port_terminal
        try:
            env = effective_env(instance)
        except FinalError as exc:
            raise CommandError(str(exc)) from None
        privileged = (settings.CLAWORC_K8S_PRIVILEGED if backend == KUBERNETES
                      else settings.CLAWORC_DOCKER_PRIVILEGED)
        # The real keys only feed the checksum annotation (a hash); every value printed is the
        # placeholder.
        spec = spec_with(instance, privileged=privileged, port_chrome=chrome,
                         port_terminal=terminal, env=env)
        shown = spec_with(instance, privileged=privileged, port_chrome=chrome,
                          port_terminal=terminal, env=dict.fromkeys(env, SECRET_PLACEHOLDER))
        header = [f"# instance {instance.name} on {backend}; API key values are "
                  f"{SECRET_PLACEHOLDER}"]
        if placeholder_ports:
            header.append(f"# PLACEHOLDER ports {chrome}/{terminal}: no pair is allocated yet "
                          "(the first reconcile allocates one)")
        if backend == KUBERNETES:
            text = kubernetes_documents(spec, shown)
        else:
            text = docker_document(shown)
        self.stdout.write("\n".join(header) + "\n" + text, ending="")


def _access() -> DesktopAccess:
    return DesktopAccess(getattr(settings, "CLAWORC_DESKTOP_ACCESS", DesktopAccess.PORTS))


def kubernetes_documents(spec, shown) -> str:
    from orchestrators.kubernetes import ClusterOptions, build_all, build_secret

    options = ClusterOptions.from_settings()
    objects = build_all(spec, namespace=settings.CLAWORC_K8S_NAMESPACE, options=options,
                        desktop_access=_access())
    objects = [build_secret(shown, namespace=settings.CLAWORC_K8S_NAMESPACE, options=options)
               if obj["kind"] == "Secret" else obj for obj in objects]
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def docker_document(shown) -> str:
    from orchestrators.docker import (
        config_bytes,
        config_path,
        container_create_kwargs,
        volume_names,
    )

    # The daemon's view of the config directory; when the dashboard runs in a container it is
    # found from its mounts at run time (docs/docker.md), which this command does not ask.
    host_dir = settings.CLAWORC_DOCKER_HOST_CONFIG_DIR or settings.CLAWORC_DOCKER_CONFIG_DIR
    try:
        kwargs = container_create_kwargs(
            shown, config_path(host_dir, shown.name),
            privileged=settings.CLAWORC_DOCKER_PRIVILEGED and shown.privileged,
            init=settings.CLAWORC_DOCKER_INIT, desktop_access=_access(),
            network=getattr(settings, "CLAWORC_DOCKER_NETWORK", "") or None)
    except (ValueError, FinalError) as exc:
        raise CommandError(f"Instance {shown.name}: {exc}") from None
    document = {
        # Mount and other SDK types are dicts underneath: print them as plain data.
        "container": json.loads(json.dumps(kwargs, default=str)),
        "volumes": list(volume_names(shown.name).values()),
        "config_path": config_path(settings.CLAWORC_DOCKER_CONFIG_DIR, shown.name),
        "config": config_bytes(shown.config).decode(),
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
