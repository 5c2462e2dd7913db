"""URLs of the app; include them once: ``path("stability/", include("django_stability.urls"))``.

Jobs: ``jobs/<id>/`` and ``jobs/<id>/download/`` (the job's owner only).
Operations: ``status/`` (JSON, staff or token), ``health/live/`` and
``health/ready/`` (anyone), ``metrics/`` (Prometheus; staff, token, or anyone
if allowed). The Stability page itself lives in the admin.
"""

from __future__ import annotations

from django.urls import path

from . import status_views, views

app_name = "django_stability"

urlpatterns = [
    path("jobs/<uuid:job_id>/", views.job_status, name="job-status"),
    path("jobs/<uuid:job_id>/download/", views.job_download, name="job-download"),
    path("status/", status_views.status, name="status"),
    path("health/live/", status_views.live, name="health-live"),
    path("health/ready/", status_views.ready, name="health-ready"),
    path("metrics/", status_views.metrics, name="metrics"),
]

status_views.register_endpoint_priority()
