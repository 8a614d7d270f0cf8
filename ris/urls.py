from django.urls import path

from ris.views import orders, patients, schedule

app_name = "ris"
urlpatterns = [
    path("patients/", patients.patient_list, name="patient_list"),
    path("patients/<int:pk>/", patients.patient_detail, name="patient_detail"),
    path("orders/", orders.order_list, name="order_list"),
    path("orders/<int:pk>/", orders.order_detail, name="order_detail"),
    path("reading/", orders.reading_list, name="reading_list"),
    path("schedule/", schedule.schedule, name="schedule"),
    path("appointments/<int:pk>/check-in/", schedule.check_in, name="check_in"),
    path("appointments/<int:pk>/letter/", schedule.appointment_letter, name="appointment_letter"),
]
