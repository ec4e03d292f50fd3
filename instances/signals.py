"""Model signals: thin links from model changes to services (the flow: services/intents.py).

Deletion has no signal: `Instance.delete()` and `QuerySet.delete()` record a delete intent
(services.instance_delete), and the worker removes the row once the workload is gone.
"""

from django.db.models.signals import post_save
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
