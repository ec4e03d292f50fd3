from django.urls import re_path

from . import views

app_name = "desktops"
_DESKTOP = r"^instances/(?P<name>[-a-z0-9]+)/desktop/(?P<desktop>chrome|terminal)/"
urlpatterns = [
    re_path(_DESKTOP + r"$", views.desktop_open, name="open"),
    # Served by the ASGI websocket route (desktops/proxy.py); named here for reverse() only.
    re_path(_DESKTOP + r"websockify$", views.desktop_open, name="websocket"),
    re_path(_DESKTOP + r"(?P<path>.+)$", views.desktop_file, name="file"),
]
