from django.urls import path
from django.views.generic import RedirectView

from ris.views import orders, patients, procedures, rooms, schedule

app_name = "ris"
urlpatterns = [
    path("patients/", patients.patient_list, name="patient_list"),
    path("patients/new/", patients.patient_create, name="patient_create"),
    path("patients/<int:pk>/", patients.patient_detail, name="patient_detail"),
    path("patients/<int:pk>/edit/", patients.patient_edit, name="patient_edit"),
    path("patients/<int:pk>/merge/", patients.patient_merge, name="patient_merge"),
    path("patients/<int:patient_pk>/orders/new/", orders.order_create, name="order_create"),
    path("orders/", orders.order_list, name="order_list"),
    path("orders/<int:pk>/", orders.order_detail, name="order_detail"),
    # Old address of the reading worklist, kept for bookmarks.
    path("reading/", RedirectView.as_view(pattern_name="reporting:worklist"), name="reading_list"),
    path("schedule/", schedule.schedule, name="schedule"),
    path("schedule/day/", schedule.schedule_day, name="schedule_day"),
    path("schedule/week/", schedule.schedule_week, name="schedule_week"),
    path("orders/<int:pk>/book/", schedule.order_book, name="order_book"),
    path("orders/<int:pk>/walk-in/", schedule.order_walk_in, name="order_walk_in"),
    path("appointments/<int:pk>/move/", schedule.appointment_move, name="appointment_move"),
    path("appointments/<int:pk>/cancel/", schedule.appointment_cancel, name="appointment_cancel"),
    path("appointments/<int:pk>/check-in/", schedule.check_in, name="check_in"),
    path("appointments/<int:pk>/letter/", schedule.appointment_letter, name="appointment_letter"),
    path(
        "appointments/<int:pk>/letter.pdf",
        schedule.appointment_letter_pdf,
        name="appointment_letter_pdf",
    ),
    path("rooms/", rooms.room_list, name="room_list"),
    path("rooms/new/", rooms.room_create, name="room_create"),
    path("rooms/<int:pk>/", rooms.room_edit, name="room_edit"),
    path("rooms/<int:pk>/closures/", rooms.room_closure_add, name="room_closure_add"),
    path(
        "rooms/<int:pk>/closures/<int:closure_pk>/remove/",
        rooms.room_closure_remove,
        name="room_closure_remove",
    ),
    path("procedures/", procedures.procedure_list, name="procedure_list"),
    path("procedures/new/", procedures.procedure_create, name="procedure_create"),
    path("procedures/<int:pk>/", procedures.procedure_edit, name="procedure_edit"),
]
