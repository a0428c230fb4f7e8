"""tests/requirements.py: a missing component skips a test, or fails it under CRM_REQUIRE_ALL
(what `.ci/run` sets), and the run ends with the list of components checked. Each case runs
pytest on a tiny test file in a subprocess, with the module loaded as a plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = '''
from tests.requirements import optional, require


def test_needs_a_unicorn():
    require("unicorn", False, "no unicorn in this stable")


def test_needs_a_kettle():
    require("kettle", True, "always here")


def test_minifier_is_optional():
    assert optional("minifier", False, "checked unminified") is False
'''


def _pytest(folder: Path, require_all: str | None, *options: str
            ) -> subprocess.CompletedProcess[str]:
    (folder / "test_tiny.py").write_text(TINY, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CRM_REQUIRE_ALL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if require_all is not None:
        env["CRM_REQUIRE_ALL"] = require_all
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.requirements", "-p", "no:cacheprovider",
         "-rs", *options, "test_tiny.py"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )


def _components(out: str) -> list[str]:
    """The lines of the summary section, without the padding."""
    section = out.split(" components ", 1)[1].split("\n", 1)[1]
    lines = []
    for line in section.splitlines():
        if line.startswith("="):
            break
        if line.strip():
            lines.append(re.sub(r"\s+", " ", line.strip()))
    return lines


@pytest.mark.parametrize(("require_all", "options"), [
    (None, ()), ("0", ()), ("", ()),
    # `make test` runs the suite in pytest-xdist workers: their checks reach the summary too
    (None, ("-n", "2")),
])
def test_missing_component_skips_by_default(tmp_path: Path, require_all: str | None,
                                            options: tuple[str, ...]) -> None:
    run = _pytest(tmp_path, require_all, *options)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed, 1 skipped" in run.stdout
    assert "unicorn is missing: no unicorn in this stable" in run.stdout
    assert _components(run.stdout) == [
        "required in CI (missing here: skipped; with CRM_REQUIRE_ALL=1: failed):",
        "kettle present",
        "unicorn MISSING: no unicorn in this stable",
        "optional (a missing one never fails the run):",
        "minifier MISSING: checked unminified",
    ]


def test_missing_component_fails_under_require_all(tmp_path: Path) -> None:
    run = _pytest(tmp_path, "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 2 passed" in run.stdout  # the optional one is no failure
    assert ("unicorn is required (CRM_REQUIRE_ALL is set) but missing: "
            "no unicorn in this stable") in run.stdout
    assert _components(run.stdout)[0] == (
        "required (CRM_REQUIRE_ALL is set: a missing one fails its tests):")


def test_ci_entry_point_requires_every_component() -> None:
    # .ci/run must keep running the README's `make test`, with CRM_REQUIRE_ALL set before it
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "export CRM_REQUIRE_ALL=1" in commands
    assert commands[-1] == "make test"
    assert commands.index("export CRM_REQUIRE_ALL=1") < commands.index("make test")
