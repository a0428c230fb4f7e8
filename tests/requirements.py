"""Components the suite needs from outside the repository (a browser, data sets, a second
PostgreSQL) and how their absence is handled.

    from tests.requirements import optional, require

    require("chromium", CHROMIUM.exists(), "install Debian's `chromium` package")
    if not optional("rjsmin", has_rjsmin, "the tracker's size is checked unminified"): ...

`require` skips the test on a developer's machine, but fails it when CRM_REQUIRE_ALL is set
(`.ci/run` sets it): CI must not turn green because a test quietly did not run. `optional`
records a component that may be missing anywhere; the test decides what to do without it
(skip, or a fallback). Both are listed, present or not, at the end of the pytest run
(`pytest_terminal_summary`, which tests/conftest.py takes from here with the two hooks that
bring the checks of pytest-xdist's worker processes to the process that prints the summary;
`-p tests.requirements` loads them as a plugin elsewhere).
"""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass

import pytest

REQUIRE_ALL_ENV = "CRM_REQUIRE_ALL"


@dataclass(frozen=True)
class Component:
    name: str
    available: bool
    reason: str  # what is missing and how to get it, or what the test does without it
    optional: bool


# Every component checked in this run, by name (the first check wins: they are constants).
_checked: dict[str, Component] = {}


def require_all() -> bool:
    """CRM_REQUIRE_ALL set to anything but empty / 0 / false / no."""
    return os.environ.get(REQUIRE_ALL_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _record(name: str, available: bool, reason: str, optional: bool) -> None:
    _checked.setdefault(name, Component(name, bool(available), reason, optional))


def require(name: str, available: bool, reason: str) -> None:
    """Call from a test or fixture that cannot run without `name`: returns if available;
    otherwise skips, or fails under CRM_REQUIRE_ALL."""
    _record(name, available, reason, optional=False)
    if available:
        return
    if require_all():
        pytest.fail(f"{name} is required ({REQUIRE_ALL_ENV} is set) but missing: {reason}",
                    pytrace=False)
    pytest.skip(f"{name} is missing: {reason}")


def optional(name: str, available: bool, reason: str) -> bool:
    """Record a component that may be missing even in CI; returns `available`."""
    _record(name, available, reason, optional=True)
    return bool(available)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this worker's checks to the controlling process."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["components"] = [astuple(c) for c in _checked.values()]


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown without the plugin
def pytest_testnodedown(node: object, error: object) -> None:
    """In the controlling process: take in the checks of a worker that finished."""
    for fields in getattr(node, "workeroutput", {}).get("components", []):
        _record(*fields)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name every component checked in this run, optional or not, and whether it was there."""
    if not _checked:
        return
    if require_all():
        required = f"required ({REQUIRE_ALL_ENV} is set: a missing one fails its tests):"
    else:
        required = f"required in CI (missing here: skipped; with {REQUIRE_ALL_ENV}=1: failed):"
    terminalreporter.section("components")
    for title, is_optional in ((required, False),
                               ("optional (a missing one never fails the run):", True)):
        listed = sorted((c for c in _checked.values() if c.optional is is_optional),
                        key=lambda c: c.name)
        if listed:
            terminalreporter.write_line(title)
        for c in listed:
            state = "present" if c.available else f"MISSING: {c.reason}"
            terminalreporter.write_line(f"  {c.name:<24} {state}")
