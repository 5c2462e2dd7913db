"""URLs of the app; include them once: ``path("stability/", include("django_stability.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "django_stability"

urlpatterns = [
    path("jobs/<uuid:job_id>/", views.job_status, name="job-status"),
    path("jobs/<uuid:job_id>/download/", views.job_download, name="job-download"),
]
