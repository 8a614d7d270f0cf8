"""REST API of the procedure catalogue and the rooms: read-only, scoped by facility."""

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import HasCapability
from accounts.roles import Capability
from ris.api.appointments import FREE_SLOT_PARAMETERS, SlotSerializer, free_slots_response
from ris.models import Procedure, Room, RoomClosure, RoomHours


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


class RoomHoursSerializer(serializers.ModelSerializer):
    class Meta:
        model = RoomHours
        fields = ["weekday", "opens", "closes"]
        read_only_fields = fields


class RoomClosureSerializer(serializers.ModelSerializer):
    class Meta:
        model = RoomClosure
        fields = ["starts_at", "ends_at", "reason"]
        read_only_fields = fields


class RoomSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)
    procedures = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    hours = RoomHoursSerializer(many=True, read_only=True)
    closures = serializers.SerializerMethodField()

    class Meta:
        model = Room
        fields = [
            "id",
            "facility",
            "name",
            "modality",
            "ae_title",
            "is_active",
            "procedures",
            "hours",
            "closures",
        ]
        read_only_fields = fields

    @extend_schema_field(RoomClosureSerializer(many=True))
    def get_closures(self, room: Room) -> list[dict]:
        """Closures that have not ended yet: past ones are history, not schedule."""
        now = timezone.now()
        upcoming = [c for c in room.closures.all() if c.ends_at > now]
        return RoomClosureSerializer(upcoming, many=True).data


class ProcedureViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProcedureSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_ORDERS

    def get_queryset(self) -> QuerySet[Procedure]:
        procedures = Procedure.objects.visible_to(self.request.user).select_related("facility")
        for field in ("code", "modality"):
            if self.request.query_params.get(field):
                procedures = procedures.filter(**{field: self.request.query_params[field]})
        return procedures

    @extend_schema(parameters=FREE_SLOT_PARAMETERS, responses=SlotSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="free-slots", pagination_class=None)
    def free_slots(self, request: Request, pk: str | None = None) -> Response:
        """Free slots for the procedure, for a booking form to suggest."""
        return free_slots_response(request, self.get_object())


class RoomViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RoomSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_SCHEDULE

    def get_queryset(self) -> QuerySet[Room]:
        return (
            Room.objects.visible_to(self.request.user)
            .select_related("facility")
            .prefetch_related("procedures", "hours", "closures")
        )
