"""Shared fixtures: a portal on SQLite and, when PORTAL_TEST_DATABASE_URL is set, on PostgreSQL."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.app import create_app
from portal.config import REPOSITORY_ROOT, Settings
from portal.security.hashing import CODE_HASHER, STAFF_PASSWORD_HASHER

CORPUS_DIR = Path(os.environ.get("PORTAL_CORPUS_DIR") or REPOSITORY_ROOT.parent / "shared" / "corpus" / "pdf")
POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
BASE_URL = "https://portal.test"

PASSWORD = "correct horse battery staple"

# The argon2id parameters that the portal ships, before the fixture below lowers them for in-process tests.
PRODUCTION_HASHING = {
    "staff": STAFF_PASSWORD_HASHER._parameters,
    "code": CODE_HASHER._parameters,
}


@pytest.fixture(autouse=True, scope="session")
def quick_hashing() -> Iterator[None]:
    """Hash with argon2id at 1 MiB and one pass in this process, so sign-ins and codes cost about 1 ms.

    At the shipped cost a staff password takes about 120 ms and a code 30 ms on a 2-core machine, which
    made hashing a large part of the suite's time. Servers that the browser and load tests start as
    processes keep the shipped cost, and a unit test checks it.
    """
    # The portal's modules import the hasher objects by name, so their parameters change in place. argon2-cffi
    # (25.1) keeps them in the private _parameters slot; a release that moves it fails this fixture at once.
    for hasher in (STAFF_PASSWORD_HASHER, CODE_HASHER):
        hasher._parameters = dataclasses.replace(
            hasher._parameters,
            time_cost=1,
            memory_cost=1024,
            parallelism=1,
        )
    yield
    STAFF_PASSWORD_HASHER._parameters = PRODUCTION_HASHING["staff"]
    CODE_HASHER._parameters = PRODUCTION_HASHING["code"]


@dataclass(frozen=True)
class CorpusFile:
    name: str
    expected: str  # process | reject | either
    exercises: str

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.name


def corpus_files() -> list[CorpusFile]:
    manifest = CORPUS_DIR / "MANIFEST.tsv"
    if not manifest.is_file():
        raise pytest.UsageError(
            f"The PDF corpus is missing: {manifest} does not exist. Clone the repository beside the shared/ "
            "folder (so that ../shared/corpus/pdf exists) or set PORTAL_CORPUS_DIR to the corpus folder."
        )
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [CorpusFile(row["file"], row["expected"], row["exercises"]) for row in rows]


def database_backends() -> list[str]:
    return ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]


@contextlib.contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """Create an empty database on ``backend`` and drop it afterwards; yields its URL."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'portal.db'}"
        return

    assert POSTGRES_URL is not None
    name = "portal_test_" + secrets.token_hex(6)
    admin_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(data_dir: Path, database_url: str, **overrides: str) -> Settings:
    return Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(data_dir),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_CLINIC_NAME": "Riverside Dermatology",
            "PORTAL_CLINIC_CONTACT": "+44 20 7946 0000",
            "PORTAL_PUBLIC_URL": BASE_URL,
            **overrides,
        }
    )


@pytest.fixture(params=database_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings, pdf_workers=1, lazy_pdf=True)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app, base_url=BASE_URL) as test_client:
        yield test_client


def csrf_from(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)
