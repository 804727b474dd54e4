"""What every store must show after migrating a database written before run records existed."""

from __future__ import annotations

from faultline.schema import GlobalAnomaly
from faultline.store import GlobalAnomalies, GlobalAnomalyRuns, Store
from tests.contract.batches import write_batch
from tests.contract.test_aggregate_contract import DAY0
from tests.contract.test_global_anomaly_run_contract import run_of


def assert_old_anomalies_kept_and_a_rerun_replaces_them(
    store: Store, found: list[GlobalAnomaly]
) -> None:
    """The old anomalies are there without a run record; a rerun replaces them and is recorded.

    Closes `store`.
    """
    try:
        assert store.query(GlobalAnomalies(DAY0)) == found
        assert store.query(GlobalAnomalyRuns(DAY0)) == []
        rerun = run_of(DAY0, found[1:])
        store.write(write_batch(global_anomalies=found[1:], global_anomaly_run=rerun))
        assert store.query(GlobalAnomalies(DAY0)) == found[1:]
        assert store.query(GlobalAnomalyRuns(DAY0)) == [rerun]
    finally:
        store.close()
