"""Who gets the model next: one explanation at a time per process, a person before background warm-up work.

A front end (the dashboard, a notebook serving several people) computes explanations for people and, in the
background, warms :data:`simx.explain.engine.FEATURE_CACHE` for the images they are likely to open next. Two
explanations at once only contend for the same cores (each slows the other down by about as much as it runs), and
a background pass must never sit in front of a person who is waiting. :class:`ExplainTurns` is that rule:
``with TURNS.person():`` for a person's request, ``with TURNS.background():`` for a unit of background work, which
waits while anyone is queued. :class:`FeaturePrefetcher` is the background work itself: the unperturbed features and
embeddings of a query and its shown neighbours, one neighbour per turn, once per key, in a daemon thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Iterator, Sequence

#: Set (to anything) to switch the background prefetch off, e.g. for a benchmark of cold requests.
NO_PREFETCH_ENV = "SIMX_NO_PREFETCH"


class ExplainTurns:
    """One explanation at a time; people go before background work."""

    def __init__(self, poll_s: float = 0.02):
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self.poll_s = float(poll_s)

    @property
    def waiting(self) -> int:
        """People queued for (or holding) the model right now."""
        return self._waiting

    @contextlib.contextmanager
    def person(self) -> Iterator[None]:
        """Hold the model for a person's request; announced first, so background work steps aside."""
        with self._count_lock:
            self._waiting += 1
        try:
            with self._lock:
                yield
        finally:
            with self._count_lock:
                self._waiting -= 1

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Hold the model for one short unit of background work, once nobody is waiting."""
        while True:
            while self._waiting:
                time.sleep(self.poll_s)
            self._lock.acquire()
            if not self._waiting:  # a person may have arrived between the check and the lock: let them go first
                break
            self._lock.release()
        try:
            yield
        finally:
            self._lock.release()


class FeaturePrefetcher:
    """Warm the engine's feature cache for a query and its neighbours in a background thread, once per key.

    Opening a pair then pays only for the method's own passes. Best effort: a failure (an unreadable image, a
    model error) leaves the cache cold and is kept in :attr:`errors` for inspection, nothing more.
    """

    def __init__(self, turns: ExplainTurns):
        self.turns = turns
        self._seen: set[Any] = set()
        self._seen_lock = threading.Lock()
        self.errors: dict[Any, BaseException] = {}

    @staticmethod
    def enabled() -> bool:
        return not os.environ.get(NO_PREFETCH_ENV)

    def prefetch(self, key: Any, model: Any, query: Any | Callable[[], Any],
                 neighbours: Sequence[Any]) -> threading.Thread | None:
        """Start warming the cache for ``query`` against each of ``neighbours`` (images, paths, tensors, or for
        the query a function returning one), one neighbour per background turn. Returns the thread, or None when
        ``key`` was prefetched before or prefetching is switched off (:data:`NO_PREFETCH_ENV`)."""
        if not self.enabled():
            return None
        with self._seen_lock:
            if key in self._seen:
                return None
            self._seen.add(key)
        thread = threading.Thread(target=self._work, args=(key, model, query, list(neighbours)),
                                  name="simx-prefetch", daemon=True)
        thread.start()
        return thread

    def _work(self, key: Any, model: Any, query: Any, neighbours: list[Any]) -> None:
        from .engine import PairContext

        try:
            q = query() if callable(query) else query
            for neighbour in neighbours:
                with self.turns.background():
                    ctx = PairContext(model, q, [neighbour])
                    ctx.query_embedding  # noqa: B018 - both images' features land in FEATURE_CACHE
        except Exception as exc:  # noqa: BLE001 - a cold cache is the only consequence
            self.errors[key] = exc

    def forget(self) -> None:
        """Allow every key to be prefetched again (after the cache was cleared)."""
        with self._seen_lock:
            self._seen.clear()


#: The process-wide turns and prefetcher the dashboard uses.
TURNS = ExplainTurns()
PREFETCHER = FeaturePrefetcher(TURNS)
