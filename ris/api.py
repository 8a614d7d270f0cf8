"""REST API of the RIS: patients, orders, procedures, rooms — scoped and audited."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.models import Facility
from accounts.permissions import HasCapability
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import selectors, services
from ris.models import Order, OrderStatusChange, Patient, Procedure, Room


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
            "study_instance_uid",
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


class OrderStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.Status.choices)
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class OrderStatusChangeSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = OrderStatusChange
        fields = ["from_status", "to_status", "changed_at", "user", "actor", "door", "reason"]
        read_only_fields = fields


S = Order.Status
# Who may move an exam to a status: the front desk books, checks in and cancels; the
# technologist starts and completes. Reported and final come from signing a report.
STATUS_CAPABILITIES: dict[str, tuple[str, ...]] = {
    S.REQUESTED: (Capability.EDIT_ORDERS,),
    S.SCHEDULED: (Capability.EDIT_ORDERS,),
    S.ARRIVED: (Capability.EDIT_ORDERS, Capability.PERFORM_EXAMS),
    S.NO_SHOW: (Capability.EDIT_ORDERS,),
    S.CANCELLED: (Capability.EDIT_ORDERS,),
    S.IN_PROGRESS: (Capability.PERFORM_EXAMS,),
    S.COMPLETED: (Capability.PERFORM_EXAMS,),
}


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
        params = self.request.query_params
        for field in ("accession_number", "placer_order_number", "study_instance_uid"):
            if params.get(field):
                orders = orders.filter(**{field: params[field]})
        return orders

    @extend_schema(request=OrderStatusSerializer, responses=OrderSerializer)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, pk: str | None = None) -> Response:
        """Move the exam along its lifecycle; a step it does not allow is a 400 naming
        the steps it does."""
        order = self.get_object()
        body = OrderStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        target = body.validated_data["status"]
        needed = STATUS_CAPABILITIES.get(target)
        if needed is None:
            raise ValidationError({"status": f"{target} is set by signing the report"})
        allowed = set().union(*(facility_ids_for(request.user, c) for c in needed))
        if order.facility_id not in allowed:
            raise PermissionDenied(f"Your role does not allow setting exams to {target}.")
        try:
            services.order_status_set(
                order=order,
                status=target,
                actor=request.user,
                door=audit.Door.API,
                reason=body.validated_data.get("reason", ""),
            )
        except services.RisError as error:
            raise ValidationError({"status": str(error)}) from error
        order.refresh_from_db()
        return Response(self.get_serializer(order).data)

    @extend_schema(responses=OrderStatusChangeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """Every step of the exam's lifecycle: from, to, when, who, through which door."""
        order = self.get_object()
        audit.record_request(request, action=audit.Action.VIEW, door=audit.Door.API, obj=order)
        changes = order.status_changes.select_related("user")
        return Response(OrderStatusChangeSerializer(changes, many=True).data)


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
