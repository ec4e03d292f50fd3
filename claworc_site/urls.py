from django.contrib import admin
from django.urls import include, path

# The admin's documented branding attributes (AdminSite.site_header, site_title, index_title).
admin.site.site_header = "Claworc"
admin.site.site_title = "Claworc"
admin.site.index_title = "Instances, keys and settings"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("desktops.urls")),
    path("", include("instances.urls")),
]
