from django.urls import path

from . import controls, metrics, views

app_name = "instances"
urlpatterns = [
    path("", views.instance_list, name="list"),
    path("instances/<slug:name>/", views.instance_detail, name="detail"),
    path("instances/<slug:name>/action/", controls.instance_action, name="action"),
    path("instances/<slug:name>/log/follow", controls.log_follow, name="log-follow"),
    path("instances/<slug:name>/log.txt", controls.log_download, name="log-download"),
    path("live", controls.instances_live, name="live"),
    path("health", views.health, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
