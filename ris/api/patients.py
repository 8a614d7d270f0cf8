"""REST API of the patient registry: scoped by facility, audited."""

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.models import Facility
from accounts.permissions import HasCapability
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import selectors, services
from ris.api.common import AuditedReadMixin
from ris.models import Patient


class PatientSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", queryset=Facility.objects.all())
    dicom_name = serializers.CharField(read_only=True)

    class Meta:
        model = Patient
        fields = [
            "id",
            "facility",
            "mrn",
            "mrn_issuer",
            "family_name",
            "given_name",
            "middle_name",
            "name_prefix",
            "name_suffix",
            "dicom_name",
            "birth_date",
            "sex",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"mrn_issuer": {"required": False}}
        # Uniqueness is checked by the service, which knows the issuer default.
        validators: list[Any] = []

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        request = self.context.get("request")
        user = request.user if request else None
        # Only facilities where the caller registers patients; any other code reads as
        # unknown, so the API does not tell which facilities exist.
        fields["facility"].queryset = Facility.objects.filter(
            pk__in=facility_ids_for(user, Capability.EDIT_PATIENTS)
        )
        return fields


class PatientViewSet(
    AuditedReadMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PatientSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_PATIENTS
    capability_by_method = {"POST": Capability.EDIT_PATIENTS}
    audit_object_type = "patient"

    def get_queryset(self) -> QuerySet[Patient]:
        query = self.request.query_params.get("q", "")
        return selectors.patient_search(user=self.request.user, query=query).select_related(
            "facility"
        )

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        facility: Facility = data.pop("facility")
        try:
            patient = services.patient_create(
                facility=facility, actor=request.user, door=audit.Door.API, **data
            )
        except services.RisError as error:
            raise ValidationError({"detail": str(error)}) from error
        return Response(self.get_serializer(patient).data, status=status.HTTP_201_CREATED)
