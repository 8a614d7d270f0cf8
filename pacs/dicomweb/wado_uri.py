"""WADO-URI (PS3.18 9): `?requestType=WADO&studyUID=…` for older clients."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
