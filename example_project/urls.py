from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Job status and download, for the orders export.
    path("stability/", include("django_stability.urls")),
    path("", include("example_project.shop.urls")),
]
