"""What every RIS API view shares: reads written to the audit trail, scoped ids."""

from typing import Any

from django.db import models
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit


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


@extend_schema_field(OpenApiTypes.INT)
class ScopedPrimaryKeyField(serializers.PrimaryKeyRelatedField):
    """A primary key resolved among the rows of facilities where the caller holds
    `capability`: any other id reads as unknown, so the API does not tell what exists
    elsewhere."""

    def __init__(self, model: type[models.Model], capability: str, **kwargs: Any) -> None:
        self.model = model
        self.capability = capability
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet:
        user = self.context["request"].user
        return self.model.objects.visible_to(user, self.capability)
