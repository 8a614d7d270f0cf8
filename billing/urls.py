from django.urls import path

from billing import dashboard_views, views

app_name = "billing"
urlpatterns = [
    path("fees/", views.fee_list, name="fee_list"),
    path("dashboard/", dashboard_views.dashboard, name="dashboard"),
    path("fees/new/", views.fee_create, name="fee_create"),
    path("charges/", views.charge_list, name="charge_list"),
    path("charges/<int:pk>/", views.charge_action, name="charge_action"),
    path("exports/", views.export_list, name="export_list"),
    path("exports/new/", views.export_create, name="export_create"),
    path("exports/<int:pk>/download/", views.export_download, name="export_download"),
]
