"""REST API of the archive's configuration: DICOM peers."""

from django.db.models import QuerySet
from rest_framework import serializers, viewsets

from accounts.permissions import HasCapability
from accounts.roles import Capability
from pacs.models import DicomNode


class DicomNodeSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = DicomNode
        fields = [
            "id",
            "facility",
            "ae_title",
            "host",
            "port",
            "description",
            "may_store",
            "may_query",
            "is_active",
        ]
        read_only_fields = fields


class DicomNodeViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DicomNodeSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.MANAGE_FACILITY

    def get_queryset(self) -> QuerySet[DicomNode]:
        return DicomNode.objects.visible_to(
            self.request.user, Capability.MANAGE_FACILITY
        ).select_related("facility")
