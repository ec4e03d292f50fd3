from django.apps import AppConfig


class OrchestratorsConfig(AppConfig):
    name = "orchestrators"
    verbose_name = "Orchestrators"
