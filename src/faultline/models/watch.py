"""Following the champion alias off the engine's batch path (the in-process engine's hot swap).

A promotion or a rollback moves the serving alias in the registry. The watcher looks at it every
`lifecycle.swap_interval_s` in a thread of its own and, when it names another version, loads
that version there too, so the seconds MLflow takes to load a forest never stall a batch. The
engine only reads `model`, which is the newest model loaded (an attribute read, never a wait);
the engine switches between batches (engine/swap.py).

A registry that fails (unreachable, a version that does not load) leaves the model in use as it
is: the failure is logged and the next look tries again, so the engine never stops over it.
"""

from __future__ import annotations

import logging
import threading

from faultline.models.base import ChampionSource, LoadedModel

log = logging.getLogger(__name__)


class ChampionWatcher:
    """Looks at `source`'s alias every `interval_s`; `model` is the newest version loaded."""

    def __init__(self, source: ChampionSource, model: LoadedModel, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._source = source
        self._model = model
        self._interval_s = interval_s
        self.last_error: str | None = None

    @property
    def model(self) -> LoadedModel:
        return self._model

    def look(self) -> bool:
        """One look at the alias, loading the version it names when that is another; whether
        the model changed. Never raises: a failure is logged and kept in `last_error`."""
        serving = self._model.info.version
        try:
            version = self._source.version_of()
            if version is None or version == serving:
                self.last_error = None
                return False
            model = self._source.load_version(version)
        except Exception as exc:  # any registry failure: keep scoring with the model in use
            # Logged before it is recorded: whoever sees `last_error` finds the log line too.
            log.warning("model watch: keeping version %s: %s", serving, exc)
            self.last_error = f"model watch: {exc}"
            return False
        self.last_error = None
        log.info("model watch: the alias moved from version %s to %s: loaded", serving, version)
        # One reference assignment: the engine sees either model whole, never a mix.
        self._model = model
        return True

    def run(self, stop: threading.Event) -> None:
        """Look every `interval_s` until `stop` is set (a supervised worker)."""
        while not stop.wait(self._interval_s):
            self.look()
