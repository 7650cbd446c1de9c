"""The periodic checkpoint task: repeats, survives a failing attempt, stops with its context."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portal.audit.checkpoints import CheckpointError, periodic_checkpoints


async def test_periodic_checkpoints_repeat_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def make(_portal: Any) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise CheckpointError("event seq 3 does not match its stored leaf hash")
        if len(calls) == 2:
            raise OSError("database unreachable")

    # 0.0005 minutes is 30 ms between attempts.
    async with periodic_checkpoints(object(), 0.0005, make=make) as task:  # type: ignore[arg-type]
        for _ in range(100):
            if len(calls) >= 4:
                break
            await asyncio.sleep(0.03)

    assert len(calls) >= 4
    assert task.cancelled()
    assert "access-log checkpoint rejected" in caplog.text
    assert "retrying at the next interval" in caplog.text
