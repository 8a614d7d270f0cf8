"""REST API of the schedule: appointments (book, move, cancel, walk in) and free slots."""

import datetime as dt

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.permissions import HasCapability
from accounts.roles import Capability
from ris import scheduling, services
from ris.api.common import AuditedReadMixin, ScopedPrimaryKeyField
from ris.models import LONGEST_APPOINTMENT, Appointment, Order, Procedure, Room

# The widest range one free-slot search may cover: a clerk looks weeks ahead, not years.
MAX_SEARCH_DAYS = 62


class AppointmentSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)
    accession_number = serializers.CharField(source="order.accession_number", read_only=True)
    patient = serializers.IntegerField(source="order.patient_id", read_only=True)
    status = serializers.CharField(source="order.status", read_only=True)
    room_name = serializers.CharField(source="room.name", read_only=True)

    class Meta:
        model = Appointment
        fields = [
            "id",
            "facility",
            "order",
            "accession_number",
            "patient",
            "status",
            "room",
            "room_name",
            "starts_at",
            "ends_at",
            "is_walk_in",
            "is_cancelled",
            "cancelled_at",
            "cancel_reason",
            "moved_from",
            "created_at",
        ]
        read_only_fields = fields


class BookSerializer(serializers.Serializer):
    order = ScopedPrimaryKeyField(Order, Capability.EDIT_SCHEDULE)
    room = ScopedPrimaryKeyField(Room, Capability.EDIT_SCHEDULE)
    starts_at = serializers.DateTimeField()


class MoveSerializer(serializers.Serializer):
    room = ScopedPrimaryKeyField(Room, Capability.EDIT_SCHEDULE)
    starts_at = serializers.DateTimeField()
    reason = serializers.CharField(max_length=150, required=False, allow_blank=True)


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)
    cancel_exam = serializers.BooleanField(default=False)


class WalkInSerializer(serializers.Serializer):
    order = ScopedPrimaryKeyField(Order, Capability.EDIT_SCHEDULE)
    room = ScopedPrimaryKeyField(Room, Capability.EDIT_SCHEDULE, required=False, allow_null=True)


class SlotSerializer(serializers.Serializer):
    room = serializers.IntegerField(source="room.pk")
    room_name = serializers.CharField(source="room.name")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()


def _refused(error: services.RisError) -> ValidationError:
    return ValidationError({"detail": str(error)})


def _day(value: str | None, name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise ValidationError({name: f"{value!r} is not a date (YYYY-MM-DD)."}) from error


class AppointmentViewSet(
    AuditedReadMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Appointments of the caller's facilities. Filters: `day` or `from`/`to` (local dates,
    inclusive), `room`, `order`, `status` (the exam's), `cancelled` (default false)."""

    serializer_class = AppointmentSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_SCHEDULE
    capability_by_method = {"POST": Capability.EDIT_SCHEDULE}
    audit_object_type = "appointment"

    def get_queryset(self) -> QuerySet[Appointment]:
        capability = (
            Capability.EDIT_SCHEDULE if self.request.method == "POST" else Capability.VIEW_SCHEDULE
        )
        appointments = Appointment.objects.visible_to(self.request.user, capability).select_related(
            "facility", "order", "room"
        )
        if self.action != "list":
            return appointments
        params = self.request.query_params
        first = _day(params.get("day") or params.get("from"), "from")
        last = _day(params.get("day") or params.get("to"), "to")
        if first:
            start = _midnight(first)
            appointments = appointments.filter(
                ends_at__gt=start, starts_at__gt=start - LONGEST_APPOINTMENT
            )
        if last:
            appointments = appointments.filter(starts_at__lt=_midnight(last + dt.timedelta(1)))
        for name in ("room", "order"):
            if params.get(name):
                if not params[name].isdigit():
                    raise ValidationError({name: "Give the numeric id."})
                appointments = appointments.filter(**{f"{name}_id": int(params[name])})
        if params.get("status"):
            appointments = appointments.filter(order__status=params["status"])
        cancelled = params.get("cancelled", "false").lower() in ("1", "true", "yes")
        return appointments.filter(is_cancelled=cancelled).order_by("starts_at", "room__name")

    @extend_schema(request=BookSerializer, responses={201: AppointmentSerializer})
    def create(self, request: Request) -> Response:
        """Book an order on a room at a time; a clash or a closed room is a 400 that says
        why (naming the exam in the way)."""
        body = BookSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            appointment = services.appointment_book(
                order=body.validated_data["order"],
                room=body.validated_data["room"],
                starts_at=body.validated_data["starts_at"],
                actor=request.user,
                door=audit.Door.API,
            )
        except services.RisError as error:
            raise _refused(error) from error
        return Response(self.get_serializer(appointment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MoveSerializer, responses={201: AppointmentSerializer})
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str | None = None) -> Response:
        """Move the exam: answers the new appointment; the old one stays, cancelled."""
        body = MoveSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            moved = services.appointment_move(
                appointment=self.get_object(),
                actor=request.user,
                door=audit.Door.API,
                **body.validated_data,
            )
        except services.RisError as error:
            raise _refused(error) from error
        return Response(self.get_serializer(moved).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CancelSerializer, responses=AppointmentSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            cancelled = services.appointment_cancel(
                appointment=self.get_object(),
                actor=request.user,
                door=audit.Door.API,
                **body.validated_data,
            )
        except services.RisError as error:
            raise _refused(error) from error
        return Response(self.get_serializer(cancelled).data)

    @extend_schema(request=WalkInSerializer, responses={201: AppointmentSerializer})
    @action(detail=False, methods=["post"], url_path="walk-in")
    def walk_in(self, request: Request) -> Response:
        """The patient is here without an appointment: the first free room now (or the one
        given), and the exam is arrived."""
        body = WalkInSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        try:
            appointment = services.walk_in(
                order=body.validated_data["order"],
                room=body.validated_data.get("room"),
                actor=request.user,
                door=audit.Door.API,
            )
        except services.RisError as error:
            raise _refused(error) from error
        return Response(self.get_serializer(appointment).data, status=status.HTTP_201_CREATED)


def free_slots_response(request: Request, procedure: Procedure) -> Response:
    """Start times where the procedure fits a room that can perform it: open, not closed,
    not booked; earliest first. Query: `from`, `to` (dates), `room`, `limit`."""
    params = request.query_params
    first = _day(params.get("from"), "from") or timezone.localdate()
    last = _day(params.get("to"), "to") or first + dt.timedelta(days=6)
    if last < first:
        raise ValidationError({"to": "The range ends before it starts."})
    if (last - first).days >= MAX_SEARCH_DAYS:
        raise ValidationError({"to": f"Search at most {MAX_SEARCH_DAYS} days at once."})
    limit = params.get("limit", "50")
    if not limit.isdigit() or not 0 < int(limit) <= 500:
        raise ValidationError({"limit": "Give a number from 1 to 500."})
    room_id = params.get("room")
    if room_id is not None and not room_id.isdigit():
        raise ValidationError({"room": "Give the numeric id."})
    slots = scheduling.free_slots(
        procedure, first, last, limit=int(limit), room_ids=[int(room_id)] if room_id else None
    )
    return Response(SlotSerializer(slots, many=True).data)


FREE_SLOT_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATE, description="First day (default today)"),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last day (default 6 days on)"),
    OpenApiParameter("room", OpenApiTypes.INT, description="Only this room"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="At most this many (default 50)"),
]


def _midnight(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))
