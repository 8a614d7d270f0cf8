"""The HL7 message log pages (facility administrators)."""

from django.urls import path

from ris.hl7 import views

app_name = "hl7"

urlpatterns = [
    path("messages/", views.message_list, name="message_list"),
    path("messages/errors/", views.message_list, {"errors": True}, name="message_errors"),
    path("messages/replay/", views.message_replay_many, name="message_replay_many"),
    path("messages/<int:pk>/", views.message_detail, name="message_detail"),
    path("messages/<int:pk>/replay/", views.message_replay, name="message_replay"),
    path("outbound/", views.outbound_list, name="outbound_list"),
    path("outbound/<int:pk>/", views.outbound_detail, name="outbound_detail"),
    path("outbound/<int:pk>/resend/", views.outbound_resend, name="outbound_resend"),
]
