"""Model signals: thin links from model changes to services (the flow: services/intents.py)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import services
from .models import Instance


@receiver(post_save, sender=Instance, dispatch_uid="instances.provision")
def provision_or_converge(sender, instance, created, raw=False, **kwargs):
    # raw: loaddata restores rows as they were, it does not ask for new workloads.
    if raw:
        return
    if created:
        instance.remember_saved_spec()
        services.instance_provision(instance=instance)
    else:
        services.instance_saved(instance=instance)


@receiver(post_delete, sender=Instance, dispatch_uid="instances.teardown")
def teardown_on_delete(sender, instance, **kwargs):
    # The row is gone by the time the task runs: pass its name and the flag, not the object.
    services.instance_teardown_enqueue(
        name=instance.name, purge_volumes=not instance.keep_volumes
    )
