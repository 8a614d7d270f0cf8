"""REST API of orders (exams) and their lifecycle: scoped by facility, audited."""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.permissions import HasCapability
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris import selectors, services
from ris.api.common import AuditedReadMixin, ScopedPrimaryKeyField
from ris.models import Order, OrderStatusChange, Patient, Procedure


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


class OrderCreateSerializer(serializers.Serializer):
    patient = ScopedPrimaryKeyField(Patient, Capability.EDIT_ORDERS)
    procedure = ScopedPrimaryKeyField(Procedure, Capability.EDIT_ORDERS)
    priority = serializers.ChoiceField(choices=Order.Priority.choices, default="routine")
    placer_order_number = serializers.CharField(max_length=64, required=False, allow_blank=True)
    referring_physician_name = serializers.CharField(
        max_length=200, required=False, allow_blank=True
    )
    reason = serializers.CharField(required=False, allow_blank=True)
    diagnosis_codes = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="ICD-10, comma separated."
    )


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


class OrderViewSet(
    AuditedReadMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = OrderSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_ORDERS
    audit_object_type = "order"

    def get_queryset(self) -> QuerySet[Order]:
        orders = selectors.order_list(
            user=self.request.user, status=self.request.query_params.get("status", "")
        )
        params = self.request.query_params
        for field in ("accession_number", "placer_order_number", "study_instance_uid", "priority"):
            if params.get(field):
                orders = orders.filter(**{field: params[field]})
        if params.get("modality"):
            orders = orders.filter(procedure__modality=params["modality"])
        if params.get("patient"):
            if not params["patient"].isdigit():
                raise ValidationError({"patient": "Give the numeric id."})
            orders = orders.filter(patient_id=int(params["patient"]))
        return orders

    @extend_schema(request=OrderCreateSerializer, responses={201: OrderSerializer})
    def create(self, request: Request) -> Response:
        """A new imaging request from the front desk: the accession number and the Study
        Instance UID the modality will use are assigned here, once."""
        if not facility_ids_for(request.user, Capability.EDIT_ORDERS):
            raise PermissionDenied("Your role does not allow creating orders.")
        body = OrderCreateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            order = services.order_create(
                actor=request.user, door=audit.Door.API, **body.validated_data
            )
        except services.RisError as error:
            raise ValidationError({"detail": str(error)}) from error
        return Response(self.get_serializer(order).data, status=status.HTTP_201_CREATED)

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
