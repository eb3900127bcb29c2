"""Personas for every access rule: a manager and a member of ``org``, and the manager of
another organization (the outsider)."""

from __future__ import annotations

import os

import pytest
from django.test import Client

from billing.models import Organization, Role
from tests.factories import make_org, make_user

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API in tests


@pytest.fixture
def org(db: None) -> Organization:
    return make_org("standard", credits=5_000)


@pytest.fixture
def other_org(db: None) -> Organization:
    return make_org("standard", credits=1_000)


@pytest.fixture
def manager(org: Organization):  # type: ignore[no-untyped-def]
    return make_user(org, Role.MANAGER)


@pytest.fixture
def member(org: Organization):  # type: ignore[no-untyped-def]
    return make_user(org, Role.MEMBER)


@pytest.fixture
def outsider(other_org: Organization):  # type: ignore[no-untyped-def]
    return make_user(other_org, Role.MANAGER)


def _client_for(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def manager_client(manager) -> Client:  # type: ignore[no-untyped-def]
    return _client_for(manager)


@pytest.fixture
def member_client(member) -> Client:  # type: ignore[no-untyped-def]
    return _client_for(member)


@pytest.fixture
def outsider_client(outsider) -> Client:  # type: ignore[no-untyped-def]
    return _client_for(outsider)
