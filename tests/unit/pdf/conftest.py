"""Shared fixtures: the real-PDF corpus and a warm worker pool per test module."""

import csv
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio

from portal.pdf import Budgets, PdfWorkerPool

REPOSITORY = Path(__file__).resolve().parents[3]
CORPUS_DIR = Path(os.environ.get("PORTAL_CORPUS_DIR", REPOSITORY.parent / "shared" / "corpus" / "pdf"))


@dataclass(frozen=True)
class CorpusFile:
    """One row of MANIFEST.tsv."""

    name: str
    exercises: str
    expected: str

    def read(self) -> bytes:
        return (CORPUS_DIR / self.name).read_bytes()


def corpus_rows() -> list[CorpusFile]:
    """Read every row of the corpus manifest."""
    with (CORPUS_DIR / "MANIFEST.tsv").open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [CorpusFile(row["file"], row["exercises"], row["expected"]) for row in rows]


def corpus_file(name: str) -> bytes:
    return (CORPUS_DIR / name).read_bytes()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[PdfWorkerPool]:
    async with PdfWorkerPool(2, Budgets()) as workers:
        yield workers
