"""The rows that flow between the Spark job's stages, and their schemas.

One row layout carries readings, dead letters and alarm transitions, because a streaming query
has one sink and they must reach the store in the same micro-batch as the readings beside them.
A dead letter has an empty station id (the decoder never accepts one) and a non-empty reason; an
alarm transition an empty station id, an empty reason and its JSON in ALARM; a reading has an
empty reason and an empty ALARM. Columns that only the job needs start with an underscore so
they cannot collide with a configured sensor's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from faultline.schema import (
    IS_ANOMALY,
    MODEL_VERSION,
    RECEIVED_AT,
    SENSOR_MASK,
    SEQ,
    STATION_ID,
    TS,
    TS_ASSIGNED,
    score_column,
)

DEAD_LETTERS_BUCKET = -1  # the state group of dead letters, which have no station
BUCKET = "_bucket"
PARTITION = "_kafka_partition"
OFFSET = "_kafka_offset"
PAYLOAD = "_payload"
REASON = "_reason"
SOURCE = "_source"
KIND = "_kind"
SIZE = "_size"  # bytes of a dead letter's original payload, of which PAYLOAD keeps a prefix
ALARM = "_alarm"  # an alarm transition row's faultline.alarm_schema.transition_to_json
STATE_SCHEMA = StructType([StructField("snapshot", StringType(), False)])

_READING_FIELDS: tuple[tuple[str, DataType], ...] = (
    (STATION_ID, StringType()),
    (TS, LongType()),
    (SEQ, LongType()),
    (TS_ASSIGNED, BooleanType()),
    (RECEIVED_AT, LongType()),
)
_DEAD_LETTER_FIELDS: tuple[tuple[str, DataType], ...] = (
    (PAYLOAD, BinaryType()),
    (REASON, StringType()),
    (SOURCE, StringType()),
    (KIND, StringType()),
    (SIZE, LongType()),
)
# What a column holds where a row has no value for it (a dead letter has no reading, a reading
# no dead letter), with the numpy type it has there; NaN for floats, as a reading without a sensor.
_FILL: dict[type[DataType], tuple[object, np.dtype]] = {
    StringType: ("", np.dtype(object)),
    LongType: (0, np.dtype(np.int64)),
    IntegerType: (0, np.dtype(np.int32)),
    BooleanType: (False, np.dtype(bool)),
    DoubleType: (np.nan, np.dtype(np.float64)),
    BinaryType: (b"", np.dtype(object)),
}


def decoded_schema(sensors: Sequence[str]) -> StructType:
    """Rows leaving the decode stage: readings with their bus position, and dead letters."""
    fields = [*_READING_FIELDS, *((s, DoubleType()) for s in sensors)]
    fields += [(PARTITION, IntegerType()), (OFFSET, LongType())]
    return _struct(fields + list(_DEAD_LETTER_FIELDS))


def verdict_schema(sensors: Sequence[str], detectors: Sequence[str]) -> StructType:
    """Rows leaving the detection stage: what the store is given."""
    fields = [*_READING_FIELDS, *((s, DoubleType()) for s in sensors)]
    fields += [(score_column(name), DoubleType()) for name in detectors]
    fields += [
        (IS_ANOMALY, BooleanType()),
        (SENSOR_MASK, LongType()),
        (MODEL_VERSION, StringType()),
    ]
    return _struct([*fields, *_DEAD_LETTER_FIELDS, (ALARM, StringType())])


def conform(frame: pd.DataFrame, schema: StructType) -> pd.DataFrame:
    """`frame` with exactly the schema's columns in order and numpy types; missing columns get
    their fill value.

    Strings stay numpy objects: pandas 3 would infer its Arrow-backed string type, which
    pyspark's conversion to Arrow cannot take.
    """
    out = {}
    n = len(frame)
    for field in schema.fields:
        fill, dtype = _FILL[type(field.dataType)]
        if field.name in frame.columns:
            values = frame[field.name].to_numpy(dtype)
        else:
            values = np.full(n, fill, dtype=dtype)
        out[field.name] = pd.Series(values, dtype=dtype, copy=False)
    return pd.DataFrame(out, columns=schema.fieldNames())


def is_dead(frame: pd.DataFrame) -> np.ndarray:
    return (frame[REASON].to_numpy() != "").astype(bool)


def is_alarm(frame: pd.DataFrame) -> np.ndarray:
    return (frame[ALARM].fillna("").to_numpy() != "").astype(bool)


def _struct(fields: Sequence[tuple[str, DataType]]) -> StructType:
    return StructType([StructField(name, kind, True) for name, kind in fields])
