"""Viewer routes, under /viewer/: the page, and the annotations API it calls."""

from django.urls import path

from pacs.viewer import views

app_name = "viewer"
urlpatterns = [
    path("studies/<str:study_instance_uid>/", views.study_page, name="study"),
    path(
        "api/studies/<str:study_instance_uid>/annotations/",
        views.study_annotations,
        name="study_annotations",
    ),
    path("api/annotations/<uuid:uid>/", views.annotation_detail, name="annotation"),
]
