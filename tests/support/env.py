"""What a test needs from this machine: skipped where it is missing, a failure under CI.

``CI=true`` promises every server, binary and package the suite uses (``.ci/run``
installs them), so there a missing one is an error, never a silent skip.
"""

from __future__ import annotations

import types
from typing import NoReturn

import pytest

from .pgserver import IN_CI

__all__ = ["IN_CI", "need_module", "unavailable"]


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; under CI, fail it instead."""
    if IN_CI:
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_module(name: str) -> types.ModuleType:
    """Import ``name``, or :func:`unavailable` when it is not installed."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        unavailable(f"{name} is not installed ({exc})")
