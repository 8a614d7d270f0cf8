"""The Celery app: workers run DICOM ingest follow-ups and HL7 processing.

Broker and result backend are Redis when REDIS_URL is set; otherwise tasks run
eagerly in-process (the embedded default of `make run`).
"""

import os
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("radpacs")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(sender: Task | None = None, **kwargs: Any) -> None:
    """Keep a worker's database connection from task to task as DATABASE_CONN_MAX_AGE
    says, as Django does between requests: closed when old, broken or left mid-
    transaction, else health-checked before its next use.

    Celery itself closes it after every task (CELERY_DB_REUSE_MAX limits that to one in
    a thousand); reconnecting to PostgreSQL for each HL7 message or study refresh cost
    more than the task. Not for eager tasks: they run inside the caller's transaction.
    """
    if sender is None or getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
