from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from accounts.views import home
from pacs.api import DicomNodeViewSet
from ris.api.appointments import AppointmentViewSet
from ris.api.catalogue import ProcedureViewSet, RoomViewSet
from ris.api.orders import OrderViewSet
from ris.api.patients import PatientViewSet
from ris.reporting import share_views

router = DefaultRouter()
router.register("patients", PatientViewSet, basename="patient")
router.register("orders", OrderViewSet, basename="order")
router.register("procedures", ProcedureViewSet, basename="procedure")
router.register("rooms", RoomViewSet, basename="room")
router.register("appointments", AppointmentViewSet, basename="appointment")
router.register("dicom-nodes", DicomNodeViewSet, basename="dicom-node")


@login_not_required
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for the load balancer: answers without touching patient data."""
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("accounts/", include("accounts.urls")),
    path("ris/", include("ris.urls")),
    path("hl7/", include("ris.hl7.urls")),
    path("reporting/", include("ris.reporting.urls")),
    # A report shared for a second opinion: opened without an account.
    path("share/<str:token>/", share_views.share_page, name="share"),
    path("share/<str:token>/viewer/", share_views.share_viewer, name="share_viewer"),
    path("billing/", include("billing.urls")),
    path("pacs/", include("pacs.urls")),
    path("viewer/", include("pacs.viewer.urls")),
    path("dicom-web/", include("pacs.dicomweb.urls")),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
