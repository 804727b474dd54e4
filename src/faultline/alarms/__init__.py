"""Alarms: verdicts become ISA-18.2 alarms with an engine part and an operator part.

`tracker` derives condition transitions from scored batches, `silence` the station-silence
ones from a timer, `state` folds any transition into an alarm's state (and checks operator
requests), `load` computes alarm-load figures. Engines, stores and the API use them; this layer
imports only config, schema and clock.
"""

from faultline.alarms.load import AlarmLoad, alarm_load
from faultline.alarms.silence import silence
from faultline.alarms.state import (
    InvalidTransition,
    acknowledge,
    apply,
    comment,
    shelve,
    unshelve,
)
from faultline.alarms.tracker import AlarmTracker, TrackerState

__all__ = [
    "AlarmLoad",
    "AlarmTracker",
    "InvalidTransition",
    "TrackerState",
    "acknowledge",
    "alarm_load",
    "apply",
    "comment",
    "shelve",
    "silence",
    "unshelve",
]
