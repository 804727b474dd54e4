"""The NAB corpus beside the repository, when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faultline.evaluate.nab import NabCorpus, default_root, load_corpus


@pytest.fixture(scope="session")
def nab_root() -> Path:
    root = default_root()
    if root is None:
        reason = "NAB corpus not found in $FAULTLINE_SHARED/nab or ../shared/nab"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def nab_corpus(nab_root: Path) -> NabCorpus:
    return load_corpus(nab_root)
