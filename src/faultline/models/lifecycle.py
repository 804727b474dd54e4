"""The lifecycle's records, as LIFECYCLE_API.md fixes them (the lifecycle branch brings
`Lifecycle` itself)."""

from __future__ import annotations

from dataclasses import dataclass

from faultline.models.base import DriftReport, ModelInfo
from faultline.models.gate import GateResult


class LifecycleRefused(Exception):
    """The operation is not allowed now; str(exc) says why."""


@dataclass(frozen=True, slots=True)
class ChampionChange:
    operation: str
    from_version: str | None
    to_version: str
    at_ms: int
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class VersionView:
    info: ModelInfo
    aliases: tuple[str, ...]
    compiled: str
    gate: GateResult | None


@dataclass(frozen=True, slots=True)
class RecordedDrift:
    report: DriftReport
    checked_at_ms: int
    model_version: str


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    msg: str
    drift: RecordedDrift
    challenger: ModelInfo | None
    gate: GateResult | None
    promoted: bool
    model_version: str
