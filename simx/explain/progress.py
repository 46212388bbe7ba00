"""Progress, cancellation and cost estimates of an explanation, for any front end to draw.

Perturbation methods run thousands of forward passes (RISE: 2,000 per side by default, minutes on a CPU), so a
person needs three things the engine alone can give: the cost before it starts (:func:`simx.explain.estimate`:
passes, and seconds at this model's measured speed on this machine), the passes done so far with an estimated
time left (:class:`Progress`, ticked by :class:`~simx.explain.engine.PairContext` at every counted pass), and a
way to stop (:class:`CancelToken`: the engine checks it at every batch and raises :class:`ExplanationCancelled`).
Nothing here draws; the dashboard turns a :class:`Progress` into a progress bar, the CLI could print it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import ExplainError


class ExplanationCancelled(ExplainError):
    """The explanation was cancelled through its :class:`CancelToken`; nothing was computed or kept."""


class CancelToken:
    """Set from any thread to stop an explanation at its next batch of passes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Progress:
    """Passes done out of the expected total, with the time so far and an estimate of the time left.

    ``callback(progress)`` runs in the computing thread after every counted batch; ``token`` cancels. ``total`` is
    the engine's estimate (:func:`simx.explain.estimate`) and may be exceeded slightly (``fraction`` stays <= 1).
    Reads from other threads are safe: the counters are plain integers updated by one thread.
    """

    def __init__(self, callback: Callable[["Progress"], None] | None = None, token: CancelToken | None = None,
                 total: int | None = None):
        self.callback = callback
        self.token = token
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self.running = False
        self.finished = False

    def start(self, total: int) -> None:
        """Begin a run of ``total`` expected passes (the engine calls this with its estimate)."""
        self.total, self.done, self.started = int(total), 0, time.perf_counter()
        self.running, self.finished = True, False

    def finish(self) -> None:
        self.running, self.finished = False, True

    def advance(self, passes: int) -> None:
        """Count ``passes`` more passes; raises :class:`ExplanationCancelled` once the token is set."""
        self.done += int(passes)
        self.check()
        if self.callback is not None:
            self.callback(self)

    def check(self) -> None:
        if self.token is not None and self.token.cancelled:
            raise ExplanationCancelled(f"explanation cancelled after {self.done:,} of {self.total or 0:,} passes")

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        return min(1.0, self.done / self.total)

    @property
    def remaining_s(self) -> float | None:
        """Seconds left at the speed so far (None before the first pass)."""
        if not self.done or not self.total:
            return None
        return max(0.0, self.elapsed_s * (self.total - self.done) / self.done)

    def describe(self) -> str:
        """``"1,200 of 4,000 passes, about 2 min left"``."""
        left = self.remaining_s
        tail = "" if left is None else f", about {format_seconds(left)} left"
        return f"{self.done:,} of {self.total or 0:,} passes{tail}"


@dataclass(frozen=True)
class CostEstimate:
    """What an explanation will cost before it runs: passes and the seconds they take at the model's measured
    speed on this machine (``seconds_per_pass``).

    ``faithfulness``: how many of the forward passes score the maps (the faithfulness estimate shown beside every
    map, :func:`simx.explain.scored.estimate_scored`); ``upper_bound``: the count is a bound, not the exact figure
    (a superpixel method estimated without its images counts the superpixels it asks for, and SLIC may return
    fewer)."""

    method: str
    forward: int
    backward: int
    seconds: float
    seconds_per_pass: float
    faithfulness: int = 0
    upper_bound: bool = False

    @property
    def passes(self) -> int:
        return self.forward + self.backward

    def describe(self) -> str:
        """``"rise: 4,002 forward passes, about 4 min on this machine"``; with the faithfulness estimate
        ``"rise: 4,046 forward passes (44 of them score the maps), about 4 min on this machine"``; a bound says
        ``"at most 4,190 forward passes, up to about 4 min"``."""
        parts = [f"{self.forward:,} forward pass{'es' if self.forward != 1 else ''}"]
        if self.faithfulness:
            parts[0] += f" ({self.faithfulness:,} of them score the maps)"
        if self.backward:
            parts.append(f"{self.backward:,} backward pass{'es' if self.backward != 1 else ''}")
        bound = "at most " if self.upper_bound else ""
        about = "up to about" if self.upper_bound else "about"
        return f"{self.method}: {bound}{' + '.join(parts)}, {about} {format_seconds(self.seconds)} on this machine"


def format_seconds(seconds: float) -> str:
    """A duration a person reads at a glance: ``"< 1 s"``, ``"12 s"``, ``"4 min"``, ``"1 h 05 min"``."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h {minutes:02d} min"
