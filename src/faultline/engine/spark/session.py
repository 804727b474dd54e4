"""The Spark session the engine runs in: the Kafka connector, Prometheus metrics, loopback only.

The connector (`spark-sql-kafka-0-10`, matching the installed pyspark) comes from Maven Central
through Spark's own resolver (Ivy); `ivy_dir` is where it keeps what it downloaded, so only the
first start on a machine downloads. Hadoop's client jars are excluded from that resolution:
pyspark ships the same ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

KAFKA_CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"
_SHIPPED_WITH_PYSPARK = (
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
)


def kafka_connector() -> str:
    """The connector's Maven coordinates; its version must be the installed Spark's."""
    return f"{KAFKA_CONNECTOR}:{pyspark.__version__}"


def session_conf(
    *,
    ui_port: int,
    host: str,
    ivy_dir: Path | None,
) -> dict[str, str]:
    conf = {
        "spark.jars.packages": kafka_connector(),
        "spark.jars.excludes": ",".join(_SHIPPED_WITH_PYSPARK),
        "spark.driver.host": host,
        "spark.driver.bindAddress": host,
        "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
        # The executors' metrics at /metrics/executors/prometheus, everything else (including
        # each streaming query's rates and latencies) at /metrics/prometheus, both on the UI port.
        "spark.ui.prometheus.enabled": "true",
        "spark.metrics.conf.*.sink.prometheusServlet.class": (
            "org.apache.spark.metrics.sink.PrometheusServlet"
        ),
        "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus",
        "spark.sql.streaming.metricsEnabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
    }
    if ivy_dir is not None:
        conf["spark.jars.ivy"] = str(Path(ivy_dir).resolve())
    return conf


def spark_session(
    *,
    master: str = "local[2]",
    app_name: str = "faultline-engine",
    ui_port: int = 4040,
    host: str = "127.0.0.1",
    ivy_dir: Path | None = None,
    python: str = sys.executable,
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A session configured for the engine (or the running one, if this process has one).

    `ui_port` 0 picks a free port (read it from `sparkContext.uiWebUrl`). `ivy_dir` None keeps
    Spark's default cache in the home directory.
    """
    # The web UI (and with it the Prometheus endpoints) binds to SPARK_LOCAL_IP, not to the
    # driver's bind address; it is read by the JVM this call launches.
    os.environ["SPARK_LOCAL_IP"] = host
    # Python workers must run the interpreter that has faultline, pandas and pyarrow; pyspark
    # reads this variable (not the spark.pyspark.python setting) when it starts them.
    os.environ["PYSPARK_PYTHON"] = python
    builder = SparkSession.builder.master(master).appName(app_name)
    conf = session_conf(
        ui_port=ui_port,
        host=host,
        ivy_dir=ivy_dir,
    )
    for key, value in {**conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
