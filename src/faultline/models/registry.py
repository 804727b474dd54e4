"""MLflow model registry over a local store: SQLite backend, artifacts inside the data directory.

Only this module touches MLflow, and it imports MLflow and scikit-learn lazily: together they
cost about two seconds, which commands that never load a model should not pay. Everything goes
through an `MlflowClient` bound to this store rather than MLflow's process-global tracking URI,
so two registries (two tests, or engine and API over different data directories) cannot cross.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from faultline.models.base import ModelInfo
from faultline.models.compiled import (
    CompiledForest,
    CompiledMismatch,
    NotCompilable,
    check_set,
    compile_forest,
    verify,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

    from faultline.models.isolation_forest import SklearnModel

EXPERIMENT = "faultline"
MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference.csv"
COMPILED_ARTIFACT = "compiled"
COMPILED_FILE = "forest.npz"
# Run tag saying whether a compiled form was logged beside the model, or why not.
COMPILED_TAG = "compiled_form"
# skops (MLflow's safe default format) refuses tree internals unless told to trust them; the
# files are our own, written by `register` into our own store.
_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
# Raised by MLflow when the registered model, or the alias on it, does not exist.
_ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


log = logging.getLogger(__name__)

Compiler = Callable[["Pipeline"], CompiledForest]


class ModelNotFoundError(LookupError):
    """No model version carries the requested alias."""


def _quiet_offline_mlflow() -> None:
    """Settings that must be in place before MLflow is first imported (so: at import time).

    There is no network here: telemetry would try to phone home. MLflow's INFO lines (creating
    tables, "Successfully registered model") are noise in a service's log. Users can still
    override both through the environment.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


_quiet_offline_mlflow()


class MlflowModelRegistry:
    """Registers trained pipelines and hands out the version under `alias` (`ModelSource`).

    `compiler` makes each registered pipeline's compiled form (models/compiled.py), logged only
    when it scores a check set exactly as scikit-learn does; a loaded model scores with it.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path,
        name: str,
        alias: str,
        compiler: Compiler = compile_forest,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root).resolve()
        self.name = name
        self.alias = alias
        self._compiler = compiler
        self._client_instance: MlflowClient | None = None
        self._cached: SklearnModel | None = None
        self._lock = threading.Lock()

    def register(
        self,
        pipeline: Pipeline,
        sensors: Sequence[str],
        reference: pd.DataFrame,
        params: Mapping[str, Any],
        *,
        alias: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelInfo:
        """Log `pipeline`, its input schema, its reference sample and (when it checks out) its
        compiled form in a run, register it, and point `alias` (default: this registry's) at it.
        """
        import mlflow.sklearn
        from mlflow.entities import Metric, Param, RunStatus, RunTag
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from faultline.models.isolation_forest import SklearnModel

        client = self._client()
        candidate = SklearnModel(
            pipeline,
            ModelInfo(self.name, "", "", self.alias, 0),
            sensors,
            reference,
        )
        run = client.create_run(self._experiment_id(), run_name=f"{self.name}-train")
        run_id = run.info.run_id
        target = alias or self.alias
        try:
            logged = {str(k): str(v) for k, v in params.items()}
            logged["sensors"] = ",".join(candidate.sensors)
            features = candidate.reference.to_numpy()
            check_rows = check_set(features)
            check_scores = candidate.sklearn_score(check_rows)
            measured = {
                **(metrics or {}),
                "reference_rows": float(len(features)),
                "anomaly_threshold": candidate.anomaly_threshold,
                "reference_anomaly_rate": float(
                    (check_scores[: len(features)] > candidate.anomaly_threshold).mean()
                ),
            }
            compiled, compiled_state = self._compile(
                pipeline, check_rows, check_scores, candidate.anomaly_threshold
            )
            if compiled is not None:
                measured["compiled_check_rows"] = float(len(check_rows))
            now = run.info.start_time
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in measured.items()],
                params=[Param(k, v) for k, v in logged.items()],
                tags=[RunTag(COMPILED_TAG, compiled_state)],
            )
            signature = ModelSignature(
                inputs=Schema([ColSpec("double", s) for s in candidate.sensors]),
                outputs=Schema([ColSpec("double", "anomaly_score")]),
            )
            with tempfile.TemporaryDirectory() as tmp:
                model_dir = Path(tmp, MODEL_ARTIFACT)
                mlflow.sklearn.save_model(
                    pipeline,
                    model_dir,
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    signature=signature,
                    skops_trusted_types=_TRUSTED_TYPES,
                    # Explicit requirements: inferring them would load the model in a subprocess.
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                        include_skops=True
                    ),
                )
                client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
                reference_file = Path(tmp, REFERENCE_ARTIFACT)
                candidate.reference.to_csv(reference_file, index=False)
                client.log_artifact(run_id, str(reference_file))
                if compiled is not None:
                    compiled_file = Path(tmp, COMPILED_FILE)
                    compiled.save(compiled_file)
                    client.log_artifact(run_id, str(compiled_file), COMPILED_ARTIFACT)
            self._ensure_registered_model()
            version = client.create_model_version(
                self.name,
                source=f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}",
                run_id=run_id,
            )
            client.set_registered_model_alias(self.name, target, version.version)
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id)
        return self._info(version, alias=target)

    def _compile(
        self, pipeline: Pipeline, rows: Any, sklearn_scores: Any, threshold: float
    ) -> tuple[CompiledForest | None, str]:
        """The compiled form and "logged", or None and why it is left out (then scikit-learn
        scores: slower, never different)."""
        try:
            compiled = self._compiler(pipeline)
            verify(compiled, sklearn_scores, rows, threshold)
        except (NotCompilable, CompiledMismatch) as exc:
            log.warning("registering %s without a compiled form: %s", self.name, exc)
            return None, f"refused: {exc}"
        return compiled, "logged"

    def load(self, alias: str | None = None) -> SklearnModel:
        """The model version that `alias` (default: this registry's alias) points to."""
        return self._load_version(self._version(alias or self.alias), alias or self.alias)

    def current(self) -> SklearnModel:
        """The serving model; reloaded only when the alias has moved to another version."""
        with self._lock:
            version = self._version(self.alias)
            if self._cached is None or self._cached.info.version != str(version.version):
                self._cached = self._load_version(version, self.alias)
            return self._cached

    def version_of(self, alias: str | None = None) -> str | None:
        """The version `alias` (default: this registry's) points to, or None; loads nothing."""
        try:
            return str(self._version(alias or self.alias).version)
        except ModelNotFoundError:
            return None

    def load_version(self, version: str) -> SklearnModel:
        """A registered version by number, whatever aliases it has."""
        return self._load_version(self._get_version(version), "")

    def point(self, alias: str, version: str) -> ModelInfo:
        """Move `alias` to `version`, which must be registered; engines following the alias
        pick the move up between batches."""
        found = self._get_version(version)
        self._client().set_registered_model_alias(self.name, alias, str(found.version))
        return self._info(found, alias=alias)

    def has_champion(self) -> bool:
        try:
            self._version(self.alias)
        except ModelNotFoundError:
            return False
        return True

    def ensure_champion(
        self,
        train: Callable[[], tuple[Pipeline, pd.DataFrame]],
        sensors: Sequence[str],
        params: Mapping[str, Any],
    ) -> ModelInfo:
        """The aliased model's identity, training and registering one first if there is none.

        A file lock makes processes starting together (engine and API) train only once.
        """
        with self._exclusive():
            try:
                return self._info(self._version(self.alias), alias=self.alias)
            except ModelNotFoundError:
                pipeline, reference = train()
                return self.register(pipeline, sensors, reference, params)

    def _client(self) -> MlflowClient:
        if self._client_instance is None:
            from mlflow import MlflowClient

            prefix = "sqlite:///"
            if self.tracking_uri.startswith(prefix):
                Path(self.tracking_uri[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
            self._client_instance = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client_instance

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return str(experiment.experiment_id)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        try:
            return str(
                client.create_experiment(EXPERIMENT, artifact_location=self.artifact_root.as_uri())
            )
        except MlflowException:
            # Another process created it between our lookup and our create.
            experiment = client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            client.create_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _version(self, alias: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self._client().get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                raise ModelNotFoundError(
                    f"no version of model {self.name!r} has alias {alias!r} in {self.tracking_uri}"
                ) from exc
            raise

    def _info(self, version: ModelVersion, alias: str) -> ModelInfo:
        run = self._client().get_run(str(version.run_id))
        return ModelInfo(
            name=self.name,
            version=str(version.version),
            run_id=str(version.run_id),
            alias=alias,
            trained_at_ms=int(run.info.start_time),
            params=dict(run.data.params),
        )

    def _load_version(self, version: ModelVersion, alias: str) -> SklearnModel:
        import mlflow.sklearn

        from faultline.models.isolation_forest import SklearnModel

        client = self._client()
        run_id = str(version.run_id)
        info = self._info(version, alias)
        pipeline = mlflow.sklearn.load_model(version.source)
        compiled = None
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
            reference = pd.read_csv(path, float_precision="round_trip")
            # Only what `register` logged after checking it; versions from before have none.
            if any(
                f.path.endswith(COMPILED_FILE)
                for f in client.list_artifacts(run_id, COMPILED_ARTIFACT)
            ):
                compiled_path = client.download_artifacts(
                    run_id, f"{COMPILED_ARTIFACT}/{COMPILED_FILE}", tmp
                )
                compiled = CompiledForest.load(Path(compiled_path))
        # The reference sample was saved with one column per sensor, in the model's order.
        return SklearnModel(pipeline, info, list(reference.columns), reference, compiled)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        with open(self.artifact_root / ".registry.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # The lifecycle's records (models/lifecycle.py): what it measured on a version's run, and
    # what it keeps about the registered model as a whole (tags holding JSON).

    def record_on_version(
        self,
        version: str,
        *,
        at_ms: int,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log metrics (at `at_ms`, so repeated records form a history) and set tags on the run
        that registered `version`."""
        from mlflow.entities import Metric, RunTag

        client = self._client()
        client.log_batch(
            str(self._get_version(version).run_id),
            metrics=[Metric(k, float(v), at_ms, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, v) for k, v in (tags or {}).items()],
        )

    def version_info(self, version: str) -> ModelInfo:
        """A registered version's identity, loading nothing."""
        return self._info(self._get_version(version), alias="")

    def run_tags(self, version: str) -> dict[str, str]:
        """The tags of the run that registered `version`."""
        run = self._client().get_run(str(self._get_version(version).run_id))
        return dict(run.data.tags)

    def listing(self) -> list[tuple[ModelInfo, tuple[str, ...], dict[str, str]]]:
        """Every registered version, newest first: its identity, its aliases, its run's tags."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            aliases = client.get_registered_model(self.name).aliases
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return []
            raise
        found = client.search_model_versions(f"name = '{self.name}'")
        rows = []
        for version in sorted(found, key=lambda v: int(v.version), reverse=True):
            named = tuple(sorted(a for a, v in aliases.items() if str(v) == str(version.version)))
            run = client.get_run(str(version.run_id))
            info = ModelInfo(
                name=self.name,
                version=str(version.version),
                run_id=str(version.run_id),
                alias=named[0] if named else "",
                trained_at_ms=int(run.info.start_time),
                params=dict(run.data.params),
            )
            rows.append((info, named, dict(run.data.tags)))
        return rows

    def model_tag(self, key: str) -> str | None:
        """A tag of the registered model, or None (also when nothing is registered yet)."""
        from mlflow.exceptions import MlflowException

        try:
            return self._client().get_registered_model(self.name).tags.get(key)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return None
            raise

    def set_model_tag(self, key: str, value: str) -> None:
        self._ensure_registered_model()
        self._client().set_registered_model_tag(self.name, key, value)

    def _get_version(self, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self._client().get_model_version(self.name, version)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                raise ModelNotFoundError(f"model {self.name!r} has no version {version!r}") from exc
            raise
