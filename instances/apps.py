from django.apps import AppConfig
from django.core import checks

from claworc_site.config import check_port_range


class InstancesConfig(AppConfig):
    name = "instances"
    verbose_name = "Instances"

    def ready(self):
        from . import keys, signals  # noqa: F401  signals: connects the model signals

        # A missing or malformed CLAWORC_ENCRYPTION_KEY stops every process here, at start-up.
        keys.check_encryption_key()
        checks.register(keys.check_stored_keys_readable, checks.Tags.database)
        checks.register(check_port_range)
