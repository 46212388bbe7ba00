"""The cost announced before a map with its faithfulness estimate is the number of passes the run makes, and the
progress bar counts to it (issue 12 items 7 and 8)."""

from __future__ import annotations

import pytest

from simx.explain import FEATURE_CACHE
from simx.explain.engine import PairContext, estimate
from simx.explain.metrics import ESTIMATE_STEPS
from simx.explain.progress import CancelToken, ExplanationCancelled, Progress
from simx.explain.scored import estimate_scored, explain_scored
from simx.explain.superpixels import method_segmentation, segment
from simx.models.toy import tiny_gap

CHEAP = {"rise": dict(n_samples=64), "sbsm": {}, "gradcam": {},
         "kernelshap": dict(n_samples=300, segmentation="slic:n=8"),
         "shapleytaylor": dict(n_samples=16, segmentation="slic:n=6"), "jointhessian": {}}


def run_counted(model, q, ns, method, **params):
    """explain_scored with a progress that records every tick -> (explanation, progress, passes actually run)."""
    progress = Progress()
    exp = explain_scored(model, q, ns, method=method, progress=progress, **params)
    scoring = exp.scores["faithfulness_estimate"]["cost"]
    return exp, progress, exp.cost.forward + exp.cost.backward + scoring["forward"] + scoring["backward"]


@pytest.mark.parametrize("method", sorted(CHEAP))
def test_the_announced_passes_are_the_passes_the_map_and_its_estimate_make(random_images, method):
    model = tiny_gap()
    q, *ns = random_images(3, seed=11)
    announced = estimate_scored(model, method, pair=PairContext(model, q, ns), **CHEAP[method])
    exp, progress, actual = run_counted(model, q, ns, method, **CHEAP[method])
    assert announced.passes == actual == progress.done == progress.total
    assert announced.faithfulness == 2 * ESTIMATE_STEPS * 2 * len(ns) > 0  # both sides' maps are scored
    assert exp.scores["faithfulness_estimate"]["steps"] == ESTIMATE_STEPS
    assert not announced.upper_bound and "at most" not in announced.describe()
    assert f"({announced.faithfulness:,} of them score the maps)" in announced.describe()


@pytest.mark.parametrize("method", ["rise", "sbsm"])
def test_the_announcement_without_the_images_is_already_exact_for_rise_and_sbsm(random_images, method):
    model = tiny_gap()
    q, n = random_images(2, seed=12)
    announced = estimate_scored(model, method, k=1, **CHEAP[method])
    _, progress, actual = run_counted(model, q, [n], method, **CHEAP[method])
    own = estimate(model, method, k=1, **CHEAP[method]).passes
    assert announced.passes == actual == progress.total == own + 2 * ESTIMATE_STEPS * 2


def test_cached_features_are_not_announced_again(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=13)
    cold = estimate_scored(model, "rise", pair=PairContext(model, q, [n]), n_samples=32)
    run_counted(model, q, [n], "rise", n_samples=32)  # leaves q and n in the feature cache
    warm = estimate_scored(model, "rise", pair=PairContext(model, q, [n]), n_samples=32)
    _, _, actual = run_counted(model, q, [n], "rise", n_samples=32)
    assert cold.passes - warm.passes == 2 and warm.passes == actual


@pytest.mark.parametrize("method,params,players", [
    ("kernelshap", dict(n_samples=600, segmentation="slic:n=12"), 12),
    ("shapleytaylor", dict(n_samples=40, segmentation="slic:n=9"), 9),
])
def test_superpixel_methods_count_the_superpixels_slic_returns(random_images, method, params, players):
    """SLIC returns fewer superpixels than asked on these pictures, so the count from the spec alone is a bound
    (said so), and the count with the pair is what the run makes."""
    model = tiny_gap()
    q, *ns = random_images(3, seed=14)
    pair = PairContext(model, q, ns)
    returned = [int(segment(pair.display_image(x), method_segmentation(params["segmentation"])).max()) + 1
                for x in [pair.query[0], *pair.neighbours]]
    assert min(returned) < players  # the case this test is about
    bound = estimate(model, method, k=2, **params)
    exact = estimate(model, method, pair=pair, **params)
    FEATURE_CACHE.clear()
    progress = Progress()
    from simx.explain import explain

    exp = explain(model, q, ns, method=method, progress=progress, **params)
    assert exact.passes == exp.cost.forward + exp.cost.backward == progress.total == progress.done
    assert bound.passes > exact.passes and bound.upper_bound and not exact.upper_bound
    assert bound.describe().startswith(f"{method}: at most {bound.forward:,} forward passes, up to about ")


def test_cancelling_during_the_scoring_stops_it(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=15)
    token = CancelToken()
    own = estimate(model, "rise", k=1, n_samples=64).passes
    seen = []

    def tick(p: Progress) -> None:
        seen.append(p.done)
        if p.done > own:  # the map is done, the faithfulness estimate has begun
            token.cancel()

    with pytest.raises(ExplanationCancelled):
        explain_scored(model, q, [n], method="rise", n_samples=64, batch_size=8, progress=tick, cancel=token)
    assert own < max(seen) < own + 2 * ESTIMATE_STEPS * 2
