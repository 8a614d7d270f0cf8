"""WADO-RS frames, bulk data, rendered images and thumbnails (PS3.18 10.4)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
