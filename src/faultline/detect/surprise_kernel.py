"""The `surprise` detector's per-reading work, compiled with numba.

A detector whose state is one row per station can only vectorise across the stations of a round,
so with few stations the cost is numpy's per-call overhead, not arithmetic. Here the rows of a
batch are walked in order, each reading touching only its own station's state: any number of
readings per station in one call, O(1) work and constant state per reading. The functions are
pure over the arrays they are given; `faultline.detect.surprise` owns the arrays and says what
they mean.

State layout (S stations, M sensors, F views):

* `scalars[S, M, len(SCALARS)]`: the per-sensor statistics named by `SCALARS`;
* `ring[S, M, short]`: the newest `short` values of each sensor (value number t at t % short);
* `quantiles[S, M, F, 4]`: each view's 50th/90th/99th/99.9th percentile estimates;
* `station[S, len(STATION_FIELDS)]`: the episode, the alarm and the tail rate of each station.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FEATURES = ("point", "mean", "jump", "volatility", "stuck", "range")
SCALARS = (
    "n",
    "location",
    "slow_location",
    "last",
    "point_scale",
    "mean_scale",
    "jump_scale",
    "fast_var",
    "slow_var",
    "run",
    "calibrated",
    "last_raw",
    "range_low",
    "range_high",
    "slot",
    "slot_sum",
    "slot_count",
    "level",
    "residual_var",
    "total_var",
    "seasonality",
)
STATION_FIELDS = ("episode_peak", "calm", "alarm_age", "alarm_quiet", "tail_rate")
QUANTILES = np.array([0.5, 0.9, 0.99, 0.999])
# Where the quantile estimates start: |N(0, 1)| for the three deviations in scales (they are
# standard deviations on normal data), about 1 for the volatility ratio, no repeats for stuck.
PRIOR = np.array(
    [[0.674, 1.645, 2.576, 3.291]] * 3
    + [[1.0, 1.25, 1.55, 1.8], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
)
# In feature units, the steepest tail the estimates may claim: a run of repeats is counted in
# readings, so there one more repeat than ever seen is worth at most one decade. The range view
# is 0 on almost every reading, so its estimates sit at 0 and this floor alone sets its tail:
# 0.08 of the range per decade keeps the simulator's false alarms at 0.31 per station-day
# (0.07: 1.03, 0.05: 4.35).
MIN_SPREAD = np.array([0.05, 0.05, 0.05, 0.05, 0.5, 0.08])

(_N, _LOC, _SLOW_LOC, _LAST, _POINT, _MEAN, _JUMP, _FAST_VAR, _SLOW_VAR, _RUN, _CAL) = range(11)
(_LAST_RAW, _LOW, _HIGH, _SLOT, _SLOT_SUM, _SLOT_COUNT, _LEVEL, _RES_VAR, _TOT_VAR, _SEASONAL) = (
    range(11, 21)
)
_PEAK, _CALM, _AGE, _QUIET, _TAIL_RATE = range(5)
_F = len(FEATURES)
_LOOKS = math.log10(_F)
_AT_MEDIAN = -math.log10(0.5)
# A run this long is not a live signal: it teaches neither baselines nor scales.
_STUCK_RUN = 2
_ALARMED_WEIGHT = 0.1
# E|X - mean| = sigma * sqrt(2/pi) for normal data, so mean absolute deviations are scaled by
# sqrt(pi/2) to read as standard deviations.
_SIGMA_PER_MAD = math.sqrt(math.pi / 2)
# A sensor that never varies has no scale; this floor (relative to its level) stands in for it.
_SCALE_FLOOR = 1e-9
# A score is reported on a new peak of an episode only: a reading ten times as surprising as
# anything of its station since it was last calm, so a fault that slowly worsens is not reported
# again on every reading; and only from the alarm's off level up, since less is routine.
_PEAK_MARGIN = 1.0
# The range view's memory: the edges move back towards the baseline by this share per reading.
_RANGE_DECAY = 1e-4
# A calibrated station reaches surprise 3 on one reading in a thousand. One that does so more often
# (tracked over a few thousand readings) has a heavier tail than the views' estimates assume, so
# its surprise is lowered by twice log10 of the excess: heavy tails are inflated more further out.
_TAIL_CHECK = 3.0
_TAIL_MEMORY = 3e-4
_TAIL_GAIN = 2.0
_NOMINAL_TAIL_RATE = 10.0**-_TAIL_CHECK
# The daily profile: half-hour slots, each the mean of its readings, averaged over days with
# this weight for the newest day; the level and variances it is judged against move slowly.
SEASON_SLOTS = 48
_SEASON_RATE = 0.3
_LEVEL_RATE = 0.001
_VARIANCE_RATE = 0.002


@njit(cache=True, nogil=True)
def _tail_surprise(q: np.ndarray, v: float, min_spread: float) -> float:
    """-log10 of the estimated share of values >= v, from one view's quantile estimates.

    Piecewise linear through (0, 0), (q50, 0.3), (q90, 1), (q99, 2), (q999, 3), and beyond the
    99.9th percentile an exponential tail (linear in surprise) as steep as the flatter of the
    last two pieces.
    """
    q50, q90, q99, q999 = q[0], q[1], q[2], q[3]
    d2 = max(q99 - q90, min_spread)
    if v > q99:
        return 2.0 + (v - q99) / max(q999 - q99, d2)
    if v > q90:
        return 1.0 + (v - q90) / d2
    if v > q50:
        return _AT_MEDIAN + (1.0 - _AT_MEDIAN) * (v - q50) / max(q90 - q50, min_spread)
    return _AT_MEDIAN * v / max(q50, min_spread)


@njit(cache=True, nogil=True)
def process(
    slots: np.ndarray,
    ts: np.ndarray,
    x: np.ndarray,
    learn: bool,
    scalars: np.ndarray,
    ring: np.ndarray,
    quantiles: np.ndarray,
    season: np.ndarray,
    station: np.ndarray,
    params: np.ndarray,
    score: np.ndarray,
    anomaly: np.ndarray,
    mask: np.ndarray,
    learning: np.ndarray,
) -> None:
    """Judge every row of `x` (rows, sensors; event times `ts` in epoch ms) in order; learn it
    too when `learn`.

    `params` = (threshold, warmup, alpha, slow, short, fast, adapt, calm, calibrating). Rows of
    slot -1 (a station never seen) get no verdict. A reading some judged sensor of which has
    learned fewer than `calibrating` values is scored but `learning`: it starts no alarm.
    Outputs are written into `score`, `anomaly`, `mask`, `learning`.
    """
    threshold, warmup = params[0], params[1]
    short = int(params[4])
    calm = params[7]
    calibrating = params[8]
    alarm_off = threshold / 2.0
    m = x.shape[1]
    features = np.zeros((m, _F))
    sensor = np.zeros(m)
    recent = np.zeros(m)
    adjusted = np.zeros(m)
    for r in range(x.shape[0]):
        s = slots[r]
        if s < 0:
            continue
        slot = day_slot(ts[r])
        # Judge: every view of every sensor against the state before this reading.
        judged_count = 0
        level = -np.inf
        raw_level = -np.inf
        worst = 0
        young = False
        tail_rate = station[s, _TAIL_RATE] if station[s, _TAIL_RATE] > 0 else _NOMINAL_TAIL_RATE
        for j in range(m):
            v = x[r, j]
            st = scalars[s, j]
            n = st[_N]
            sensor[j] = np.nan
            if not (n >= 2 and np.isfinite(v)):
                features[j, :] = np.nan
                continue
            xv = v - _seasonal_offset(st, season[s, j], slot)
            adjusted[j] = xv
            recent[j] = _short_mean(ring[s, j], n, xv, short)
            floor = _SCALE_FLOOR * (1.0 + abs(st[_LOC]))
            features[j, 0] = abs(xv - st[_LOC]) / max(st[_POINT], floor)
            features[j, 1] = abs(recent[j] - st[_SLOW_LOC]) / max(st[_MEAN], floor)
            features[j, 2] = abs(xv - st[_LAST]) / max(st[_JUMP], floor)
            features[j, 3] = math.sqrt(st[_FAST_VAR] / max(st[_SLOW_VAR], floor * floor))
            features[j, 4] = math.log2(1.0 + (st[_RUN] + 1.0 if v == st[_LAST_RAW] else 0.0))
            outside = max(xv - st[_HIGH], st[_LOW] - xv, 0.0)
            features[j, 5] = outside / max(st[_HIGH] - st[_LOW], floor)
            if n < warmup:
                continue
            best = -np.inf
            for f in range(_F):
                best = max(best, _tail_surprise(quantiles[s, j, f], features[j, f], MIN_SPREAD[f]))
            sensor[j] = best - _LOOKS
            judged_count += 1
            young = young or n < calibrating
            if sensor[j] > level:
                level = sensor[j]
                worst = j
        has = judged_count > 0
        if has:
            level -= math.log10(judged_count)
            raw_level = level
            level -= _TAIL_GAIN * max(0.0, math.log10(tail_rate / _NOMINAL_TAIL_RATE))
            peak = level >= alarm_off and level > station[s, _PEAK] + _PEAK_MARGIN
            score[r] = level if peak else 0.0
        else:
            score[r] = np.nan
        # The alarm: on at `threshold`, off once below half of it for `short` readings, after
        # lasting at least `short`; no verdict leaves it as it was.
        age, quiet = station[s, _AGE], station[s, _QUIET]
        was_on = age > 0
        # Its quantile estimates of a sensor still calibrating are too young to trust their
        # tails: such a reading is scored (the score still ranks it) but starts no alarm.
        learning[r] = has and young
        starts = has and not was_on and level >= threshold and not young
        if was_on and has and level < alarm_off:
            quiet += 1
        elif has and level >= alarm_off:
            quiet = 0
        ends = was_on and age >= short and quiet >= short
        active = (was_on and not ends) or starts
        anomaly[r] = active and has
        bits = 0
        if anomaly[r]:
            for j in range(m):
                if np.isfinite(sensor[j]) and sensor[j] >= alarm_off:
                    bits |= 1 << j
            if bits == 0:
                bits = 1 << worst
        mask[r] = bits
        if not learn:
            continue
        station[s, _AGE] = age + 1 if active else 0
        station[s, _QUIET] = quiet if active else 0
        if has:
            hit = 1.0 if raw_level >= _TAIL_CHECK else 0.0
            station[s, _TAIL_RATE] = tail_rate + _TAIL_MEMORY * (hit - tail_rate)
            # An episode lasts until the station has been calm (below the alarm's off level) for
            # `calm` readings in a row; the next surprising reading then starts a new one.
            station[s, _PEAK] = max(station[s, _PEAK], level)
            station[s, _CALM] = station[s, _CALM] + 1.0 if level < alarm_off else 0.0
            if station[s, _CALM] >= calm:
                station[s, _PEAK] = 0.0
        for j in range(m):
            v = x[r, j]
            if not np.isfinite(v):
                continue
            st = scalars[s, j]
            if st[_N] < 2:
                adjusted[j] = v - _seasonal_offset(st, season[s, j], slot)
                recent[j] = _short_mean(ring[s, j], st[_N], adjusted[j], short)
            _absorb(
                st,
                ring[s, j],
                quantiles[s, j],
                v,
                adjusted[j],
                recent[j],
                features[j],
                sensor[j],
                params,
            )
            _learn_season(st, season[s, j], v, slot)


@njit(cache=True, nogil=True)
def day_slot(ts_ms: int) -> int:
    """The slot of the day (UTC) an event time falls in."""
    return int((ts_ms // 1000) % 86400 * SEASON_SLOTS // 86400)


@njit(cache=True, nogil=True)
def _seasonal_offset(st: np.ndarray, season: np.ndarray, slot: int) -> float:
    """How far this time of day usually sits from the sensor's level, as far as it is seasonal.

    Zero until the slot has been seen on two days, and scaled by the share of the sensor's
    variance the daily profile explains, so a signal without a daily pattern is left as it is.
    """
    if season[1, slot] < 2:
        return 0.0
    return st[_SEASONAL] * (season[0, slot] - st[_LEVEL])


@njit(cache=True, nogil=True)
def _short_mean(ring: np.ndarray, n: float, v: float, short: int) -> float:
    """Mean of `v` and the newest `short - 1` values before it."""
    held = int(min(n, short - 1))
    total = 0.0
    for i in range(held):
        total += ring[(int(n) - 1 - i) % short]
    return (total + v) / (held + 1)


@njit(cache=True, nogil=True)
def _absorb(
    st: np.ndarray,
    ring: np.ndarray,
    q: np.ndarray,
    raw: float,
    v: float,
    recent: float,
    features: np.ndarray,
    surprise: float,
    params: np.ndarray,
) -> None:
    """Learn one finite value of one sensor: `raw` as sent, `v` with the daily pattern removed."""
    threshold, warmup, alpha, slow_rate = params[0], params[1], params[2], params[3]
    short, fast, adapt = int(params[4]), params[5], params[6]
    n = st[_N]
    first = n == 0
    run = st[_RUN] + 1.0 if (raw == st[_LAST_RAW] and not first) else 0.0
    # A run of repeats teaches no baseline or scale: a frozen sensor would otherwise shrink its
    # own scale and alarm on its recovery.
    learn = not first and run < _STUCK_RUN
    rate = max(alpha, 1.0 / (n + 1.0))
    slow = max(slow_rate, 1.0 / (n + 1.0))
    if first:
        st[_LOC] = v
        st[_SLOW_LOC] = v
    elif learn:
        deviation = v - st[_LOC]
        shift = recent - st[_SLOW_LOC]
        step = v - st[_LAST]
        st[_POINT] += rate * (_SIGMA_PER_MAD * abs(deviation) - st[_POINT])
        st[_MEAN] += slow * (_SIGMA_PER_MAD * abs(shift) - st[_MEAN])
        st[_JUMP] += rate * (_SIGMA_PER_MAD * abs(step) - st[_JUMP])
        st[_FAST_VAR] += max(fast, 1.0 / (n + 1.0)) * (deviation * deviation - st[_FAST_VAR])
        st[_SLOW_VAR] += rate * (deviation * deviation - st[_SLOW_VAR])
        st[_LOC] += rate * deviation
        st[_SLOW_LOC] += slow * shift
    # The range seen lately: it shrinks slowly towards the baseline, so one old excursion does
    # not blind the range view for good.
    if first:
        st[_LOW] = v
        st[_HIGH] = v
    else:
        st[_LOW] = min(st[_LOW] - _RANGE_DECAY * (st[_LOW] - st[_LOC]), v)
        st[_HIGH] = max(st[_HIGH] - _RANGE_DECAY * (st[_HIGH] - st[_LOC]), v)
    st[_RUN] = run
    st[_LAST] = v
    st[_LAST_RAW] = raw
    # The first values' features are measured against scales from a handful of readings and run
    # wild; calibrating on them would make later real anomalies look ordinary.
    if n >= 2 and n >= warmup // 4 and np.all(np.isfinite(features)):
        # What raises an alarm barely teaches the calibration, so a fault does not make the next
        # one look ordinary; a lasting change of regime still gets learned.
        weight = _ALARMED_WEIGHT if surprise >= threshold else 1.0
        _calibrate(q, st[_CAL], features, weight, adapt)
        st[_CAL] += 1.0
    ring[int(n) % short] = v
    st[_N] = n + 1.0


@njit(cache=True, nogil=True)
def _learn_season(st: np.ndarray, season: np.ndarray, raw: float, slot: int) -> None:
    """Fold a finished slot's mean into the daily profile and track how much it explains."""
    current = int(st[_SLOT])
    if slot != current:
        if st[_SLOT_COUNT] > 0:
            mean = st[_SLOT_SUM] / st[_SLOT_COUNT]
            seen = season[1, current]
            season[0, current] = (
                mean
                if seen == 0
                else season[0, current] + _SEASON_RATE * (mean - season[0, current])
            )
            season[1, current] = seen + 1.0
        st[_SLOT] = slot
        st[_SLOT_SUM] = 0.0
        st[_SLOT_COUNT] = 0.0
    st[_SLOT_SUM] += raw
    st[_SLOT_COUNT] += 1.0
    st[_LEVEL] = raw if st[_N] <= 1 else st[_LEVEL] + _LEVEL_RATE * (raw - st[_LEVEL])
    if season[1, slot] >= 2:
        residual = raw - season[0, slot]
        spread = raw - st[_LEVEL]
        st[_RES_VAR] += _VARIANCE_RATE * (residual * residual - st[_RES_VAR])
        st[_TOT_VAR] += _VARIANCE_RATE * (spread * spread - st[_TOT_VAR])
        if st[_TOT_VAR] > 0:
            st[_SEASONAL] = min(1.0, max(0.0, 1.0 - st[_RES_VAR] / st[_TOT_VAR]))


@njit(cache=True, nogil=True)
def _calibrate(
    q: np.ndarray, done: float, features: np.ndarray, weight: float, adapt: float
) -> None:
    """Move each quantile estimate one step towards the new value (Robbins-Monro).

    A step is `adapt` times the estimates' own 50th-99th spread (larger while few values have
    been seen), up by p when the value lies above the p-quantile estimate and down by 1 - p
    otherwise, so each estimate settles where a share 1 - p of values lie above it.
    """
    if done == 0:
        q[:, :] = PRIOR
    gain = weight * max(adapt, 1.0 / (done + 10.0))
    for f in range(_F):
        spread = max(q[f, 2] - q[f, 0], MIN_SPREAD[f])
        for k in range(4):
            p = QUANTILES[k]
            q[f, k] += gain * spread * (p if features[f] > q[f, k] else p - 1.0)
        # Estimates of one feature stay ordered, so the surprise stays monotonic.
        for k in range(1, 4):
            q[f, k] = max(q[f, k], q[f, k - 1])
