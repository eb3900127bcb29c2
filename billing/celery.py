"""The Celery app. Tasks are ``@shared_task`` functions in each app's ``tasks.py``."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")

app = Celery("tally")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _leave_the_worker_process_group(**kwargs: Any) -> None:
    """Each pool process in a process group of its own, so that a signal meant for the
    worker (Ctrl-C in a terminal, honcho's SIGTERM to the group on `make run`'s Ctrl-C,
    Celery's "signal the main process only") reaches only the main process, which then
    shuts its pool down warmly, rather than killing the pool processes mid-task and logging
    an ERROR for each. A pool process still exits when the main process does."""
    os.setpgid(0, 0)
