"""REST API of the RIS: patients, orders, procedures, rooms — scoped and audited."""

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
from ris.models import Order, Patient, Procedure, Room


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


class OrderSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)
    procedure_code = serializers.CharField(source="procedure.code", read_only=True)
    procedure_name = serializers.CharField(source="procedure.name", read_only=True)
    modality = serializers.CharField(source="procedure.modality", read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "facility",
            "patient",
            "accession_number",
            "placer_order_number",
            "procedure_code",
            "procedure_name",
            "modality",
            "status",
            "priority",
            "referring_physician_name",
            "reason",
            "diagnosis_codes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ProcedureSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Procedure
        fields = [
            "id",
            "facility",
            "code",
            "name",
            "modality",
            "body_part",
            "duration_minutes",
            "uses_contrast",
            "preparation",
            "is_active",
        ]
        read_only_fields = fields


class RoomSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Room
        fields = ["id", "facility", "name", "modality", "ae_title", "is_active"]
        read_only_fields = fields


class AuditedReadMixin:
    """List and retrieve write who read which rows to the audit trail (door: API)."""

    audit_object_type = ""

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = list(page if page is not None else queryset)
        audit.record_list(
            request,
            objects=rows,
            object_type=self.audit_object_type,
            door=audit.Door.API,
            query=dict(request.query_params),
        )
        data = self.get_serializer(rows, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        audit.record_request(request, action=audit.Action.VIEW, door=audit.Door.API, obj=instance)
        return Response(self.get_serializer(instance).data)


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


class OrderViewSet(AuditedReadMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = OrderSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_ORDERS
    audit_object_type = "order"

    def get_queryset(self) -> QuerySet[Order]:
        orders = selectors.order_list(
            user=self.request.user, status=self.request.query_params.get("status", "")
        )
        accession = self.request.query_params.get("accession_number")
        return orders.filter(accession_number=accession) if accession else orders


class ProcedureViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProcedureSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_ORDERS

    def get_queryset(self) -> QuerySet[Procedure]:
        return Procedure.objects.visible_to(self.request.user).select_related("facility")


class RoomViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RoomSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_SCHEDULE

    def get_queryset(self) -> QuerySet[Room]:
        return Room.objects.visible_to(self.request.user).select_related("facility")
