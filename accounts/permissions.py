"""Capability checks for pages and the API: one role table, two doors."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.scoping import capabilities_for


def capability_required(capability: str) -> Callable:
    """Page decorator: 403 unless the user holds `capability` at one of their facilities."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if capability not in capabilities_for(request.user):
                raise PermissionDenied(f"Your role does not allow this ({capability}).")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasCapability(BasePermission):
    """API permission: the view names `required_capability` (or one per method)."""

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        per_method: dict[str, str] = getattr(view, "capability_by_method", {})
        capability = per_method.get(request.method or "GET") or getattr(
            view, "required_capability", None
        )
        if capability is None:
            return False
        return capability in capabilities_for(request.user)
