"""The argon2id parameters the portal ships, which the in-process tests lower for speed."""

from __future__ import annotations

from argon2 import Type

from tests.conftest import PRODUCTION_HASHING


def test_code_hashing_parameters() -> None:
    code = PRODUCTION_HASHING["code"]
    assert code.type is Type.ID
    assert code.memory_cost == 19 * 1024
    assert code.time_cost == 2
    assert code.parallelism == 1
    assert code.salt_len == 16


def test_staff_password_parameters() -> None:
    staff = PRODUCTION_HASHING["staff"]
    assert staff.type is Type.ID
    assert staff.memory_cost == 64 * 1024
    assert staff.time_cost == 3
    assert staff.parallelism == 4
    assert staff.salt_len == 16
