"""The alert path end to end: a committed debit enqueues the email task on commit, a real
Celery worker (real Redis, real PostgreSQL) sends it; a rolled-back debit sends nothing."""

from __future__ import annotations

import email
from pathlib import Path

import pytest
from django.db import transaction

from billing.models import AlertKind, AlertThreshold, Role
from ledger import postings
from tests.close_helpers import celery_worker, wait_for
from tests.factories import fund, make_org, make_user

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def _sent(directory: Path) -> list[email.message.Message]:
    messages = []
    for path in sorted(directory.glob("*.log")):
        for chunk in path.read_text().split("-" * 79):
            if chunk.strip():
                messages.append(email.message_from_string(chunk.strip()))
    return messages


def test_low_credit_email_and_restored_email_sent_by_the_worker(tmp_path: Path) -> None:
    org = make_org("standard", credits=5_000)
    manager = make_user(org, Role.MANAGER)
    make_user(org, Role.MEMBER)
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=1_000)
    with celery_worker(email_dir=str(tmp_path)):
        with pytest.raises(RuntimeError), transaction.atomic():
            postings.debit(org.account, 4_800, key="rolled-back", operation="training_a100_per_minute")
            raise RuntimeError("rolled back")
        postings.debit(org.account, 4_200, key="committed", operation="training_a100_per_minute")
        (low,) = wait_for(lambda: _sent(tmp_path), timeout=30)
        assert low["To"] == manager.email
        assert "is low on credits: 800 available" in low["Subject"]
        assert {part.get_content_type() for part in low.walk()} >= {"text/plain", "text/html"}
        fund(org, 1_000)
        wait_for(lambda: len(_sent(tmp_path)) == 2, timeout=30)
    subjects = [message["Subject"] for message in _sent(tmp_path)]
    assert sum("credits restored, 1,800 available" in subject for subject in subjects) == 1
    assert sum("is low on credits: 800 available" in subject for subject in subjects) == 1
    threshold = AlertThreshold.objects.get(organization=org)
    assert not threshold.below and threshold.last_alerted_at is not None
