"""A URLconf with login views, for the W010 check."""

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import path

from tests.testapp import ratelimit_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="account-login"),
    path("decorated/login/", ratelimit_views.decorated, name="guarded-login"),
]
