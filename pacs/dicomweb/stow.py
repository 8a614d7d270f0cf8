"""STOW-RS (PS3.18 10.5): storing instances through the archive's ingest service."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from pacs.dicomweb.access import DicomWebError, Scope


def store(request: HttpRequest, scope: Scope, study_uid: str) -> HttpResponse:
    raise DicomWebError(501, "STOW-RS is being built")
