from django.urls import path

from . import metrics, views

app_name = "instances"
urlpatterns = [
    path("", views.instance_list, name="list"),
    path("instances/<slug:name>/", views.instance_detail, name="detail"),
    path("health", views.health, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
]
