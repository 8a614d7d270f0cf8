from django.urls import path

from billing import views

app_name = "billing"
urlpatterns = [path("fees/", views.fee_list, name="fee_list")]
