"""simx.explain.scheduling: one explanation at a time, people before background work; the feature prefetch."""

from __future__ import annotations

import threading
import time

from simx.explain import FEATURE_CACHE, PairContext
from simx.explain.scheduling import NO_PREFETCH_ENV, ExplainTurns, FeaturePrefetcher
from simx.models.toy import tiny_gap


def test_background_work_waits_for_a_person_and_a_person_never_waits_behind_a_queued_background_turn():
    turns = ExplainTurns(poll_s=0.001)
    order: list[str] = []
    person_in = threading.Event()
    release = threading.Event()

    def person(name: str, hold: threading.Event | None = None) -> None:
        with turns.person():
            order.append(name)
            person_in.set()
            if hold is not None:
                hold.wait(5)

    def background() -> None:
        with turns.background():
            order.append("background")

    first = threading.Thread(target=person, args=("alice", release))
    first.start()
    person_in.wait(5)
    bg = threading.Thread(target=background)
    bg.start()
    time.sleep(0.05)
    assert order == ["alice"] and turns.waiting == 1  # the background turn is held back
    second = threading.Thread(target=person, args=("bob",))
    second.start()
    time.sleep(0.05)
    assert turns.waiting == 2
    release.set()
    for t in (first, second, bg):
        t.join(5)
    assert order == ["alice", "bob", "background"] and turns.waiting == 0


def test_a_failing_request_releases_its_turn():
    turns = ExplainTurns()
    try:
        with turns.person():
            raise RuntimeError("model error")
    except RuntimeError:
        pass
    assert turns.waiting == 0
    with turns.background():  # would block forever if the lock had leaked
        pass


def test_prefetch_warms_the_feature_cache_once_per_key(random_images, monkeypatch):
    monkeypatch.delenv(NO_PREFETCH_ENV, raising=False)
    model = tiny_gap()
    q, n1, n2 = random_images(3, seed=4)
    pre = FeaturePrefetcher(ExplainTurns())
    thread = pre.prefetch("q1", model, lambda: q, [n1, n2])
    thread.join(30)
    assert not pre.errors and len(FEATURE_CACHE) == 3
    assert pre.prefetch("q1", model, lambda: q, [n1, n2]) is None  # once per key
    ctx = PairContext(model, q, [n1, n2])
    ctx.neighbour_embeddings  # noqa: B018
    assert ctx.cost.forward == 0  # everything came from the warmed cache


def test_prefetch_failures_are_kept_not_raised_and_it_can_be_switched_off(random_images, monkeypatch):
    monkeypatch.delenv(NO_PREFETCH_ENV, raising=False)
    pre = FeaturePrefetcher(ExplainTurns())
    pre.prefetch("bad", tiny_gap(), lambda: "/no/such/image.png", random_images(1)).join(30)
    assert "bad" in pre.errors and len(FEATURE_CACHE) == 0
    monkeypatch.setenv(NO_PREFETCH_ENV, "1")
    assert pre.prefetch("other", tiny_gap(), lambda: "/no/such/image.png", []) is None
