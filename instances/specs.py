"""Selectors that turn an Instance row into the plain InstanceSpec a backend takes."""

from orchestrators.base import InstanceSpec, Resources, Storage

from .keys import effective_env
from .models import Instance
from .services import ports_allocate


def instance_spec(instance: Instance, *, privileged: bool) -> InstanceSpec:
    """`privileged` comes from the orchestrator in use (each backend has its own setting)."""
    ports = ports_allocate(instance=instance)
    return spec_with(instance, privileged=privileged, port_chrome=ports.port_chrome,
                     port_terminal=ports.port_terminal, env=effective_env(instance))


def spec_with(instance: Instance, *, privileged: bool, port_chrome: int, port_terminal: int,
              env: dict[str, str]) -> InstanceSpec:
    """The spec from the row and the given ports and keys, allocating and decrypting nothing
    (`manage.py show_workload` passes placeholders)."""
    return InstanceSpec(
        name=instance.name,
        image=instance.effective_image,
        port_chrome=port_chrome,
        port_terminal=port_terminal,
        env=env,
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
