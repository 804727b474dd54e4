"""One Spark session for every Spark test (a JVM per process, ~10-30 s to start), the Kafka broker
svc.py started, and a small model registered once for all the tests' settings."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from faultline.config import Settings, load_settings
from tests.services.endpoints import REPO, missing, require_endpoint
from tests.store.servers import postgres_schema  # noqa: F401 (a fixture the tests ask for)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

IVY_DIR = REPO / ".cache" / "spark-ivy"
HERE = Path(__file__).parent
# A Spark job test takes one to four minutes on the 2-core box, close to the suite's 300 s limit
# when the box is busy; the limit is there to catch a hang, not to time a job.
JOB_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(JOB_TIMEOUT_S))


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    if shutil.which("java") is None:
        missing("java not found: the Spark engine needs Java 17 (apt-get install openjdk-17-jre)")
    try:
        from faultline.engine.spark import spark_session
    except ImportError as exc:
        missing(f"pyspark not installed ({exc}): pip install -e '.[spark]'")
    session = spark_session(ui_port=0, ivy_dir=IVY_DIR)
    yield session
    session.stop()


@pytest.fixture
def bootstrap() -> str:
    return require_endpoint("FAULTLINE_TEST_KAFKA")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every test's settings keep the MLflow registry, so the model is trained once."""
    return tmp_path_factory.mktemp("models")


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path: Path
) -> SettingsFactory:
    """Settings on a fresh topic and SQLite store; a small, quick model; `overrides` on top.
    The Kafka broker is required only when `bus_url` is not overridden."""

    def make(**overrides: Any) -> Settings:
        if "bus_url" not in overrides:
            bootstrap = request.getfixturevalue("bootstrap")
            overrides["bus_url"] = f"kafka://{bootstrap}?partitions=3"
        values: dict[str, Any] = {
            "data_dir": model_dir,
            "store_url": f"sqlite:///{tmp_path / 'spark.db'}",
            "readings_topic": f"spark-{uuid.uuid4().hex[:10]}",
            "model": {"n_estimators": 40, "train_samples": 2000},
            "detect": {"warmup": 10, "calibrating": 10},
        }
        return load_settings(**{**values, **overrides})

    return make
