"""Choosing a store by URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultline.config import load_settings
from faultline.store import MemoryStore, SqliteStore, Stations, StoreError, open_store


def test_memory_url_opens_a_memory_store() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    store.close()


def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = open_store("sqlite:///data/nested/faultline.db")

    assert isinstance(store, SqliteStore)
    assert store.query(Stations()) == []
    store.close()
    assert (tmp_path / "data" / "nested" / "faultline.db").is_file()


def test_an_absolute_sqlite_path_takes_four_slashes(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "store.db"

    store = open_store(f"sqlite:///{target}")

    assert f"sqlite:///{target}".startswith("sqlite:////")
    store.close()
    assert target.is_file()


def test_the_default_settings_url_opens_a_store_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")

    store = open_store(settings.store_url)

    store.close()
    assert (tmp_path / "data" / "faultline.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://localhost/faultline", "supported are memory://, sqlite:///"),
        ("faultline.db", "supported are memory://, sqlite:///"),
        ("", "supported are"),
        ("sqlite://host/faultline.db", "has no host"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///data/", "names no database file"),
        ("sqlite:///:memory:", "use memory://"),
        ("memory://somewhere", "takes nothing after the scheme"),
    ],
)
def test_urls_no_store_understands_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_a_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the directory should go")

    with pytest.raises(StoreError, match="cannot create the directory"):
        open_store(f"sqlite:///{tmp_path}/taken/faultline.db")
