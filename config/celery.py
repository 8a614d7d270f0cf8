"""The Celery app: workers run DICOM ingest follow-ups and HL7 processing.

Broker and result backend are Redis when REDIS_URL is set; otherwise tasks run
eagerly in-process (the embedded default of `make run`).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("radpacs")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
