"""REST API of the procedure catalogue and the rooms: read-only, scoped by facility."""

from django.db.models import QuerySet
from rest_framework import serializers, viewsets

from accounts.permissions import HasCapability
from accounts.roles import Capability
from ris.models import Procedure, Room


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
