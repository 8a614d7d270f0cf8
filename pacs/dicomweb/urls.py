"""DICOMweb routes (PS3.18 10.4 WADO-RS, 10.5 STOW-RS, 10.6 QIDO-RS), served under /dicom-web/."""

from django.urls import path

from pacs.dicomweb import pixel_views, views, wado_uri

STUDY = "studies/<str:study>"
SERIES = f"{STUDY}/series/<str:series>"
INSTANCE = f"{SERIES}/instances/<str:instance>"

app_name = "dicomweb"
urlpatterns = [
    path("studies", views.studies, name="studies"),
    path("series", views.all_series, name="series"),
    path("instances", views.all_instances, name="instances"),
    path(STUDY, views.study, name="study"),
    path(f"{STUDY}/metadata", views.study_metadata, name="study-metadata"),
    path(f"{STUDY}/series", views.study_series, name="study-series"),
    path(f"{STUDY}/instances", views.study_instances, name="study-instances"),
    path(SERIES, views.series, name="series-retrieve"),
    path(f"{SERIES}/metadata", views.series_metadata, name="series-metadata"),
    path(f"{SERIES}/instances", views.series_instances, name="series-instances"),
    path(INSTANCE, views.instance, name="instance"),
    path(f"{INSTANCE}/metadata", views.instance_metadata, name="instance-metadata"),
]
# Frames, bulk data, rendered and thumbnails (WADO-RS); WADO-URI.
urlpatterns += pixel_views.urlpatterns + wado_uri.urlpatterns
