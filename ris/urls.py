from django.urls import path

from ris import views

app_name = "ris"
urlpatterns = [
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/<int:pk>/", views.patient_detail, name="patient_detail"),
    path("orders/", views.order_list, name="order_list"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("schedule/", views.schedule, name="schedule"),
    path("appointments/<int:pk>/check-in/", views.check_in, name="check_in"),
    path("appointments/<int:pk>/letter/", views.appointment_letter, name="appointment_letter"),
    path("reading/", views.reading_list, name="reading_list"),
]
