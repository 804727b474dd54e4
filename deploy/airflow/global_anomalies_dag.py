"""Airflow (3.x) DAG: Faultline's daily global anomalies in production.

Each run covers one UTC day: the run whose data interval starts on day D (`ds`) starts at
00:05 on D + 1, once the day is over and the last readings of it have had five minutes to reach
the store, and runs `faultline batch global-anomalies --day D`. The command reads its settings
(FAULTLINE_STORE_URL, ...) from the worker's environment, as every Faultline process does.
A day run again, by a retry or a backfill, replaces that day's results instead of adding to them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

COMMAND = "faultline batch global-anomalies --day {{ ds }}"

with DAG(
    dag_id="faultline_global_anomalies",
    description="Seasonal Hybrid ESD over each station's 1-minute means of the day",
    schedule="5 0 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=10)},
    tags=["faultline"],
):
    BashOperator(
        task_id="global_anomalies",
        bash_command=COMMAND,
        append_env=True,
        execution_timeout=timedelta(hours=2),
    )
