from django.urls import path

from pacs import views

app_name = "pacs"
urlpatterns = [
    path("studies/", views.study_list, name="study_list"),
    path("upload/", views.upload, name="upload"),
]
