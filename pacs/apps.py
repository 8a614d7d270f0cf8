from django.apps import AppConfig


class PacsConfig(AppConfig):
    name = "pacs"
    verbose_name = "PACS"

    def ready(self) -> None:
        import pydicom.config

        # An archive keeps what modalities send; invalid values are the sender's to fix
        # and would otherwise fill the logs with a warning per element.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

        from pacs.dimse import reactor

        # pynetdicom's association threads poll every millisecond; wait on events instead.
        reactor.install()
