from django.apps import AppConfig


class DesktopsConfig(AppConfig):
    name = "desktops"
    verbose_name = "Desktops"
