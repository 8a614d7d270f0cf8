from django.urls import path

from ris.reporting import share_views, template_views, turnaround_views, views

app_name = "reporting"
urlpatterns = [
    path("worklist/", views.worklist, name="worklist"),
    path("exams/<int:pk>/", views.exam, name="exam"),
    path("exams/<int:pk>/claim/", views.claim, name="claim"),
    path("exams/<int:pk>/release/", views.release, name="release"),
    path("exams/<int:pk>/assign/", views.assign, name="assign"),
    path("exams/<int:pk>/start/", views.start, name="start"),
    path("results/", views.results, name="results"),
    path("reports/<int:pk>/", views.report_page, name="report"),
    path("reports/<int:pk>/report.pdf", views.report_pdf, name="report_pdf"),
    path("reports/<int:pk>/share/", share_views.share_create, name="share_create"),
    path("shares/<int:pk>/revoke/", share_views.share_revoke, name="share_revoke"),
    path("reports/<int:pk>/save/", views.save, name="save"),
    path("reports/<int:pk>/autosave/", views.autosave, name="autosave"),
    path("reports/<int:pk>/correct/", views.correct, name="correct"),
    path("reports/<int:pk>/addendum/", views.addendum, name="addendum"),
    path("reports/<int:pk>/critical/", views.critical_flag, name="critical_flag"),
    path("critical/", views.critical_list, name="critical_list"),
    path("critical/<int:pk>/", views.critical_detail, name="critical_detail"),
    path("critical/<int:pk>/acknowledge/", views.critical_acknowledge, name="critical_acknowledge"),
    path("templates/", template_views.template_list, name="template_list"),
    path("templates/new/", template_views.template_create, name="template_create"),
    path("templates/import/", template_views.template_import, name="template_import"),
    path("templates/<int:pk>/", template_views.template_edit, name="template_edit"),
    path("macros/", template_views.macro_list, name="macro_list"),
    path("macros/new/", template_views.macro_create, name="macro_create"),
    path("macros/<int:pk>/", template_views.macro_edit, name="macro_edit"),
    path("turnaround/", turnaround_views.turnaround_page, name="turnaround"),
]
