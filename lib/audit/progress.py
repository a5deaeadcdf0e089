"""Progress of one pair's long certified solve (issue 12 item 1, issue 17): the anytime
loop (:func:`otaudit.core.anytime.anytime_bounds`) calls ``progress(round, lower, upper)``
after every round; :class:`SolveProgress` turns that into records of the running certified
interval and hands them, throttled, to a ``publish(record)`` callable.

Plain Python: the publisher (a Prefect progress artifact and a task-run log line,
:mod:`otaudit.tasks.progress`) is given from the tasks layer; nothing here talks to an API.
A solve shorter than ``after_s`` publishes nothing; after that, at most one record every
``every_s`` seconds, and :meth:`SolveProgress.close` publishes the last interval if it was
throttled away. A failing ``publish`` only stops the progress (logged once), never the pair.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import config
from ..core.result import relative_gap
from .summary import squared_label

__all__ = ["PROGRESS_MEASURES", "ProgressRecord", "SolveProgress", "format_interval"]

log = logging.getLogger(__name__)

#: The measures whose solve is anytime (rounds of a certified interval) and takes
#: ``progress=``: ``ot_bounds`` (:func:`otaudit.ot_bounds`), ``w2``
#: (:func:`otaudit.solve_ot`), both on W2² (squared), and ``otdd``
#: (:func:`otaudit.otdd_from_stats`: its outer solve), on OTDD² (squared).
PROGRESS_MEASURES = ("ot_bounds", "w2", "otdd")


def format_interval(lower: float, upper: float, digits: int | None = None) -> str:
    """``[lower, upper]`` with enough significant digits that a narrow interval's two ends
    differ (``config.DISPLAY_DIGITS`` plus the decades of the relative gap, at most 12)."""
    base = config.DISPLAY_DIGITS if digits is None else digits
    gap = relative_gap(lower, upper)
    extra = 0 if gap == 0 or not math.isfinite(gap) else max(0, math.ceil(-math.log10(gap)))
    d = min(12, base + extra)
    return f"[{lower:.{d}g}, {upper:.{d}g}]"


@dataclass(frozen=True)
class ProgressRecord:
    """The running certified interval of one pair's solve after ``round`` rounds,
    ``seconds`` after the pair started. ``lower``/``upper`` bound W2² or OTDD² (squared:
    :func:`otaudit.audit.summary.squared_label` names it)."""

    pair: str
    measure: str
    round: int
    lower: float
    upper: float
    seconds: float

    @property
    def gap_rel(self) -> float:
        """``(upper - lower) / upper`` (0 when closed, inf without a finite upper bound)."""
        return relative_gap(self.lower, self.upper)

    @property
    def percent(self) -> float:
        """``100 * lower / upper``: the share of the upper bound already certified as a
        lower bound (100 = closed). Never decreases while the interval never widens."""
        if self.upper == self.lower:
            return 100.0
        if not math.isfinite(self.upper) or self.upper <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * self.lower / self.upper))

    def line(self) -> str:
        """One display line, e.g. ``pair a~b ot_bounds  W2² in [1.23, 1.24]  gap 0.8 %  12 s
        (round 3)``."""
        gap = self.gap_rel
        g = "inf" if not math.isfinite(gap) else f"{100 * gap:.{config.DISPLAY_DIGITS - 2}g}"
        return (
            f"pair {self.pair} {self.measure}  {squared_label(self.measure)} in "
            f"{format_interval(self.lower, self.upper)}"
            f"  gap {g} %  {self.seconds:.0f} s (round {self.round})"
        )


class SolveProgress:
    """The ``progress(round, lower, upper)`` callable of one pair's solve, throttled.

    Args:
        pair: ``"a~b"``; measure: the manifest measure.
        publish: ``publish(record)``, called with a :class:`ProgressRecord` (the first once
            the solve has run ``after_s`` seconds, then at most every ``every_s`` seconds).
        after_s, every_s: default ``config.PROGRESS_AFTER_S``, ``config.PROGRESS_EVERY_S``.
    """

    def __init__(
        self,
        pair: str,
        measure: str,
        publish: Callable[[ProgressRecord], Any],
        *,
        after_s: float | None = None,
        every_s: float | None = None,
    ):
        self.pair, self.measure, self.publish = pair, measure, publish
        self.after_s = config.PROGRESS_AFTER_S if after_s is None else float(after_s)
        self.every_s = config.PROGRESS_EVERY_S if every_s is None else float(every_s)
        self.t0 = time.monotonic()
        self.last: ProgressRecord | None = None
        self.sent: ProgressRecord | None = None
        self._sent_at = -math.inf
        self._broken = False

    def __call__(self, rnd: int, lower: float, upper: float) -> None:
        now = time.monotonic()
        self.last = ProgressRecord(
            self.pair, self.measure, int(rnd), float(lower), float(upper), now - self.t0
        )
        if now - self.t0 >= self.after_s and now - self._sent_at >= self.every_s:
            self._send(self.last, now)

    def close(self) -> None:
        """Publish the last interval if it was throttled away (only once something was
        published: a short solve stays silent)."""
        if self.sent is not None and self.last is not self.sent:
            self._send(self.last, time.monotonic())

    def _send(self, record: ProgressRecord | None, now: float) -> None:
        if record is None or self._broken:
            return
        try:
            self.publish(record)
        except Exception as e:  # noqa: BLE001 - progress is cosmetic: the pair goes on
            self._broken = True
            log.warning("progress of pair %s %s not published: %s", self.pair, self.measure, e)
            return
        self.sent, self._sent_at = record, now
