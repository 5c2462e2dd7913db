from django.urls import path

from tests.testapp import ratelimit_views as views

urlpatterns = [
    path("decorated/", views.decorated, name="rl-decorated"),
    path("decorated-async/", views.decorated_async, name="rl-decorated-async"),
    path("posts/", views.posts_only, name="rl-posts"),
    path("soft/", views.soft, name="rl-soft"),
    path("tenant/", views.tenant, name="rl-tenant"),
    path("plain/", views.plain, name="rl-plain"),
    path("plain-async/", views.plain_async, name="rl-plain-async"),
    path("other/", views.plain, name="rl-other"),
    path("items/", views.items, name="rl-items"),
    path("items-async/", views.items_async, name="rl-items-async"),
    path("upload/", views.upload, name="rl-upload"),
    path("upload-async/", views.upload_async, name="rl-upload-async"),
]

try:
    from tests.testapp import drf_views
except ImportError:  # DRF is optional
    pass
else:
    urlpatterns += [
        path("drf/reports/", drf_views.Reports.as_view(), name="rl-drf-reports"),
        path("drf/scoped/", drf_views.Scoped.as_view(), name="rl-drf-scoped"),
    ]
