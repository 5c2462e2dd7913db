"""URLs of the integration-point tests (used with @pytest.mark.urls and under gunicorn)."""

from django.urls import path

from tests.testapp import integration_views as views

urlpatterns = [
    path("pay/", views.pay, name="pay"),
    path("pay-or-later/", views.pay_or_later, name="pay-or-later"),
    path("hung/", views.hung, name="hung"),
    path("hung-unguarded/", views.hung_unguarded, name="hung-unguarded"),
    path("ping/", views.ping, name="ping"),
]
