from django.contrib import admin
from django.urls import include, path

from tests.testapp import jobs, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("hello/", views.hello, name="hello"),
    path("hello-async/", views.hello_async, name="hello-async"),
    path("refuse/rate/", views.refuse_rate, name="refuse-rate"),
    path("refuse/capacity/", views.refuse_capacity, name="refuse-capacity"),
    path("refuse/capacity-async/", views.refuse_capacity_async, name="refuse-capacity-async"),
    path("echo/", views.echo_json, name="echo"),
    path("rl/", include("tests.testapp.ratelimit_urls")),
    path("stability/", include("django_stability.urls")),
    path("jobs-test/report/", jobs.start_report, name="start-report"),
    path("jobs-test/unconsumed/", jobs.start_unconsumed, name="start-unconsumed"),
]
