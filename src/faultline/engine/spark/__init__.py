"""The Spark Structured Streaming engine (`faultline process --engine spark`).

Needs the `spark` extra (pyspark, pyarrow) and Java 17; importing this package imports pyspark.
"""

from faultline.engine.spark.job import run_spark_engine, start_query, stop_between_batches
from faultline.engine.spark.session import spark_session

__all__ = ["run_spark_engine", "spark_session", "start_query", "stop_between_batches"]
