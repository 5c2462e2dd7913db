from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("products/", views.product_list, name="products"),
    path("products/<slug:slug>/", views.product_detail, name="product"),
    path("search/", views.search, name="search"),
    path("login/", views.login, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("checkout/<slug:slug>/", views.checkout, name="checkout"),
    path("order/<str:token>/", views.order_done, name="order"),
    path("orders/", views.orders, name="orders"),
    path("orders/export/", views.export_orders, name="export-orders"),
    path("orders/export/<uuid:job_id>/", views.export_status, name="export-status"),
    path("ops/", views.ops, name="ops"),
]
