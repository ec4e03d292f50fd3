from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "instances"
    verbose_name = "Instances"

    def ready(self):
        from . import signals  # noqa: F401  connects the model signals
