"""Fixtures for tests against a real PACS (Orthanc in a private network namespace); see docs/pacs.md.

A missing Orthanc / DICOMweb plugin / pynetdicom / root skips these tests on a developer machine with the reason,
and FAILS them under CI (environment variable CI set), so that CI can never go green without the round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import unavailable

from .orthanc import OrthancServer, OrthancUnavailable, find_orthanc, start_orthanc_server

# (test id, label, value) triples shown in the terminal summary so CI logs carry the measured timings
_TIMINGS: list[tuple[str, str, str]] = []


@pytest.fixture(scope="session")
def orthanc_available() -> None:
    """Orthanc, its DICOMweb plugin, pynetdicom and namespace rights are present (skip locally, fail in CI)."""
    try:
        find_orthanc()
    except OrthancUnavailable as exc:
        unavailable(str(exc))
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        unavailable("pynetdicom is not installed (pip install pynetdicom==3.0.4)")


@pytest.fixture(scope="session")
def _orthanc_reaper() -> Iterator[list[OrthancServer]]:
    """Servers stopped without waiting (Orthanc takes 2-3 s to exit); all reaped at the end of the session."""
    stopped: list[OrthancServer] = []
    yield stopped
    for server in stopped:
        server.wait_stopped(timeout=15)


@pytest.fixture
def orthanc(orthanc_available: None, _orthanc_reaper: list[OrthancServer], tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[OrthancServer]:
    """A fresh Orthanc (empty storage under tmp_path/orthanc) for one test; SIGTERMed by PID afterwards."""
    server = start_orthanc_server(tmp_path / "orthanc")
    try:
        record_timing(request, "orthanc startup", f"{server.startup_s * 1000:.0f} ms")
        yield server
        if request.node.stash.get(_FAILED_KEY, False):
            print(f"--- orthanc.log tail ---\n{server.log_tail()}")
    finally:
        server.stop(wait=False)
        _orthanc_reaper.append(server)


def record_timing(request: pytest.FixtureRequest, label: str, value: str) -> None:
    """Keep a measured value for the terminal summary (and as a junit property)."""
    _TIMINGS.append((request.node.nodeid, label, value))
    request.node.user_properties.append((label, value))


_FAILED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED_KEY] = True
    return report


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
    if not _TIMINGS:
        return
    terminalreporter.section("PACS round trip timings (Orthanc)")
    for nodeid, label, value in _TIMINGS:
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {label}: {value}")
