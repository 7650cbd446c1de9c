"""Measure the streaming access-log exporters: events per second and peak memory.

Runs `jsonl_lines` and `csv_rows` over synthetic events produced one at a time by a generator, and
writes the output to /dev/null. The figures cover validation, serialisation and escaping, but no
database or network. They include the generator's own cost, which is measured separately. Wall-clock
rates depend on other load on the machine, so CPU time is reported too.

Each exporter runs in its own child process, so one run's peak memory does not hide the other's.
Peak memory is the process's maximum resident set size (getrusage, Linux, KiB), sampled after a
short warm-up and again at the end: flat memory means the two barely differ.

Usage:
    .venv/bin/python bench/audit_export.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.audit.exporters import csv_rows, jsonl_lines

Exporter = Callable[[Iterable[Mapping[str, Any]]], Iterator[str]]
EXPORTERS: dict[str, Exporter] = {"jsonl": jsonl_lines, "csv": csv_rows}
WARM_UP_EVENTS = 20_000


def synthetic_events(count: int) -> Iterator[dict[str, Any]]:
    """Yield `count` valid events with varied values, built one at a time."""
    event_types = ("access.viewed", "access.download.completed", "code.failed", "share.created")
    for seq in range(1, count + 1):
        yield {
            "seq": seq,
            "time": f"2025-03-{1 + seq % 28:02d}T{seq % 24:02d}:{seq % 60:02d}:00.{seq % 1_000_000:06d}Z",
            "event_type": event_types[seq % 4],
            "outcome": "failure" if seq % 4 == 2 else "success",
            "actor": f"recipient:7d3e1c52-0c1f-4c55-9a39-{seq % 100_000:012d}",
            "share_id": f"7d3e1c52-0c1f-4c55-9a39-{seq % 100_000:012d}",
            "document_id": "3f0b8a44-2d6e-4f7a-8d8e-0a4c1b2e3d4f",
            "patient_pseudonym": "k7x2mqplw3zb4rtyvnc5hjaedg",
            "purpose": "=follow-up care" if seq % 1000 == 0 else "follow-up care",
            "ip_prefix": f"203.0.{seq % 256}.0/24",
            "user_agent_family": "Firefox",
            "request_id": f"req-{seq:08d}",
            "details": {"pages": seq % 40, "second_factor": seq % 2 == 0},
        }


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_source(count: int) -> dict[str, Any]:
    """Time the event generator alone, so its share of the exporter figures is known."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    for _ in synthetic_events(count):
        pass
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "exporter": "generator only",
        "events": count,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
    }


def measure(name: str, count: int) -> dict[str, Any]:
    """Run one exporter over `count` events and return its figures."""
    exporter = EXPORTERS[name]
    written = 0
    warm_rss = 0

    started = time.perf_counter()
    cpu_started = time.process_time()
    with open("/dev/null", "w", encoding="utf-8") as sink:
        for index, line in enumerate(exporter(synthetic_events(count))):
            sink.write(line)
            written += len(line)
            if index == WARM_UP_EVENTS:
                warm_rss = peak_rss_kib()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    return {
        "exporter": name,
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_second": round(count / seconds),
        "cpu_seconds": round(cpu_seconds, 2),
        "events_per_cpu_second": round(count / cpu_seconds),
        "output_mb": round(written / 1e6, 1),
        "peak_rss_after_warm_up_mib": round(warm_rss / 1024, 1),
        "peak_rss_at_end_mib": round(peak_rss_kib() / 1024, 1),
    }


def run_in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(target, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="number of synthetic events per exporter"
    )
    arguments = parser.parse_args()
    if arguments.events <= WARM_UP_EVENTS:
        parser.error(f"--events must exceed the warm-up of {WARM_UP_EVENTS} events")

    print(json.dumps(run_in_child(measure_source, arguments.events)))
    for name in EXPORTERS:
        print(json.dumps(run_in_child(measure, name, arguments.events)))


if __name__ == "__main__":
    main()
