from django.urls import path

from billing import views

app_name = "billing"
urlpatterns = [
    path("fees/", views.fee_list, name="fee_list"),
    path("charges/", views.charge_list, name="charge_list"),
    path("charges/<int:pk>/", views.charge_action, name="charge_action"),
]
