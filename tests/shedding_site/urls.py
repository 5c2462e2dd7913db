from django.contrib import admin
from django.urls import path

from tests.shedding_site import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ping/", views.work, {"label": "ping"}, name="ping"),
    path("slow/", views.work, {"label": "slow"}, name="slow"),
    path("critical/", views.work, {"label": "critical"}, name="critical"),
    path("aslow/", views.awork, {"label": "aslow"}, name="aslow"),
    path("acritical/", views.awork, {"label": "acritical"}, name="acritical"),
    path("stats/", views.stats, name="stats"),
    path("reset/", views.reset, name="reset"),
    path("stream/", views.stream, name="stream"),
    path("in-flight/", views.in_flight, name="in-flight"),
    path("room/", views.room, name="room"),
    path("room/leave/", views.room_leave, name="room-leave"),
    path("export/", views.export, name="export"),
    path("export/stream/", views.export_stream, name="export-stream"),
    path("product/", views.product, name="product"),
]
