from django.apps import AppConfig


class ReportingConfig(AppConfig):
    """Reporting: its models live with the RIS's (ris.models); this app holds the rest."""

    name = "ris.reporting"
    label = "reporting"
    verbose_name = "Reporting"
