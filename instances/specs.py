"""Selectors that turn an Instance row into the plain InstanceSpec a backend takes."""

from orchestrators.base import InstanceSpec, Resources, Storage

from .keys import effective_env
from .models import Instance
from .services import ports_allocate


def instance_spec(instance: Instance, *, privileged: bool) -> InstanceSpec:
    """`privileged` comes from the orchestrator in use (each backend has its own setting)."""
    ports = ports_allocate(instance=instance)
    return InstanceSpec(
        name=instance.name,
        image=instance.effective_image,
        port_chrome=ports.port_chrome,
        port_terminal=ports.port_terminal,
        env=effective_env(instance),
        config=instance.clawdbot_config or {},
        resources=Resources(
            cpu_request=instance.cpu_request,
            cpu_limit=instance.cpu_limit,
            memory_request=instance.memory_request,
            memory_limit=instance.memory_limit,
        ),
        storage=Storage(
            clawdbot=instance.storage_clawdbot,
            homebrew=instance.storage_homebrew,
            clawd=instance.storage_clawd,
            chrome=instance.storage_chrome,
        ),
        privileged=privileged,
    )
