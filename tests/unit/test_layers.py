"""The layers of docs/ARCHITECTURE.md hold: `make test` runs lint-imports as `make lint` does.

lint-imports checks the [tool.importlinter] contracts of pyproject.toml over the faultline package
of the tree these tests belong to (not whichever one the virtualenv has installed), counting
imports inside functions and under TYPE_CHECKING like any other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # from the `test` extra


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with this repository's contracts over the `faultline` package in `src`."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the test extra (.[test])"
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=src,
        # COLUMNS: the report's lines unwrapped, as a terminal this wide would show them.
        env={**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_source_keeps_every_layer_contract() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, f"broken import contracts:\n{done.stdout}{done.stderr}"
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("path", "source", "report"),
    [
        (
            # An upward import, hidden inside a function.
            "store/valid.py",
            "\n\ndef _upward() -> None:\n    from faultline.runtime import Runtime  # noqa: F401\n",
            "faultline.store is not allowed to import faultline.runtime",
        ),
        (
            # A package no layer names.
            "unplaced/__init__.py",
            '"""A part the layers contract does not place."""\n',
            "The following modules are not listed as layers:\n\n- faultline.unplaced",
        ),
    ],
)
def test_a_broken_layer_fails_with_its_report(
    tmp_path: Path, path: str, source: str, report: str
) -> None:
    """The contracts are read and can fail: a copy of the package with one flaw breaks them."""
    copy = tmp_path / "faultline"
    shutil.copytree(ROOT / "src" / "faultline", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / path
    target.parent.mkdir(exist_ok=True)
    with target.open("a") as f:
        f.write(source)
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert report in done.stdout
