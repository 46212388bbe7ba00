"""Cost estimates before a run, progress while it runs, cancellation, the engine's side loop and precision, and
the shared parameter vocabulary (issue 15; issue 12 item 8)."""

from __future__ import annotations

import contextlib

import pytest

from simx.errors import ExplainError, SimxError
from simx.explain import FEATURE_CACHE, REGISTRY, MethodOutput, explain
from simx.explain.base import MethodSpec
from simx.explain.engine import estimate
from simx.explain.progress import CancelToken, CostEstimate, ExplanationCancelled, Progress, format_seconds
from simx.explain.superpixels import Segmentation, method_segmentation, parse_segmentation
from simx.models.toy import tiny_gap

CHEAP = {"rise": dict(n_samples=64), "lime": dict(n_samples=40, segmentation="slic:n=8"),
         "kernelshap": dict(n_samples=20, segmentation="slic:n=16"), "sbsm": {}, "gradcam": {}, "searchcam": {}}


@pytest.mark.parametrize("method", sorted(CHEAP))
def test_the_estimate_is_the_number_of_passes_the_run_makes(random_images, method):
    model = tiny_gap()
    q, *ns = random_images(3, seed=1)
    est = estimate(model, method, k=2, **CHEAP[method])
    exp = explain(model, q, ns, method=method, **CHEAP[method])
    assert (est.forward, est.backward) == (exp.cost.forward, exp.cost.backward)
    assert est.seconds > 0 and est.seconds_per_pass > 0 and est.describe().startswith(f"{method}: ")


def test_progress_counts_every_pass_up_to_the_estimate(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=2)
    seen = []
    exp = explain(model, q, [n], method="rise", n_samples=100, batch_size=16,
                  progress=lambda p: seen.append((p.done, p.total)))
    total = estimate(model, "rise", k=1, n_samples=100).passes
    assert seen[-1] == (exp.cost.forward, total) == (202, 202)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and len(seen) > 10  # ticked batch by batch, not once at the end


def test_a_progress_object_reports_fraction_and_time_left(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=3)
    prog = Progress()
    explain(model, q, [n], method="rise", n_samples=64, progress=prog)
    assert prog.finished and not prog.running and prog.fraction == 1.0 and prog.remaining_s == 0.0
    assert prog.describe().startswith(f"{prog.done:,} of {prog.total:,} passes")


def test_cancelling_stops_the_run_at_the_next_batch(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=4)
    token = CancelToken()
    seen = []

    def tick(p: Progress) -> None:
        seen.append(p.done)
        if p.done >= 40:
            token.cancel()

    with pytest.raises(ExplanationCancelled, match="cancelled after") as info:
        explain(model, q, [n], method="rise", n_samples=2000, batch_size=16, progress=tick, cancel=token)
    assert isinstance(info.value, SimxError)
    assert max(seen) < 80  # stopped within one batch of the cancel, not after 4,000 passes


def test_a_token_cancelled_before_the_start_runs_nothing(random_images):
    model = tiny_gap()
    q, n = random_images(2, seed=5)
    token = CancelToken()
    token.cancel()
    with pytest.raises(ExplanationCancelled):
        explain(model, q, [n], method="gradcam", cancel=token)
    assert len(FEATURE_CACHE) == 0


def test_the_engine_calls_a_first_order_method_once_per_side_and_a_joint_method_once(random_images, monkeypatch):
    calls = []

    def first_order(ctx, side):
        calls.append(("first", side))
        maps = ctx.upsample(ctx.query_features.mean(1).expand(ctx.k, -1, -1))
        return MethodOutput(**{f"{side}_maps": maps}, params={"side_seen": side}, extras={f"{side}_x": 1})

    def joint(ctx, side):
        calls.append(("joint", side))
        return MethodOutput(params={})

    monkeypatch.setitem(REGISTRY, "t_first", MethodSpec("t_first", "", first_order, "gradient", True))
    monkeypatch.setitem(REGISTRY, "t_joint", MethodSpec("t_joint", "", joint, "joint", True))
    model = tiny_gap()
    q, *ns = random_images(3, seed=6)
    exp = explain(model, q, ns, method="t_first")
    assert calls == [("first", "query"), ("first", "neighbour")]
    assert exp.query_maps.shape == exp.neighbour_maps.shape == (2, 64, 64)
    assert exp.extras == {"query_x": 1, "neighbour_x": 1}
    calls.clear()
    explain(model, q, ns, method="t_first", side="neighbour")
    assert calls == [("first", "neighbour")]
    calls.clear()
    explain(model, q, ns, method="t_joint")
    assert calls == [("joint", "both")]


def test_unperturbed_and_masked_passes_run_under_the_same_precision(random_images, monkeypatch):
    model = tiny_gap()
    state = {"autocast": False}
    seen = []

    @contextlib.contextmanager
    def autocast():
        state["autocast"] = True
        try:
            yield
        finally:
            state["autocast"] = False

    real_features, real_embed = model.features, model.embed
    monkeypatch.setattr(model, "autocast", autocast)
    monkeypatch.setattr(model, "features", lambda x: (seen.append(("features", state["autocast"])),
                                                      real_features(x))[1])
    monkeypatch.setattr(model, "embed", lambda x: (seen.append(("embed", state["autocast"])), real_embed(x))[1])
    q, n = random_images(2, seed=7)
    explain(model, q, [n], method="rise", n_samples=8)
    assert seen and all(inside for _, inside in seen), seen


@pytest.mark.parametrize("params,message", [
    (dict(method="kernelshap", n_segments=8, compactness=10), "segmentation='slic:compactness=10,n=8'"),
    (dict(method="lime", kernel_size=2), "segmentation='quickshift:kernel_size=2'"),
    (dict(method="shapleytaylor", n_masks=16), "n_masks is now n_samples"),
    (dict(method="rise", baseline="pink"), "unknown baseline 'pink'; choose one of black, white, grey, mean, blur"),
    (dict(method="rise", baseline="segment_mean"), "segment_mean needs superpixels"),
    (dict(method="sbsm", baseline=2.0), "grey level in [0, 1]"),
    (dict(method="lime", segmentation="felzenszwalb"), "unknown segmentation 'felzenszwalb'"),
    (dict(method="kernelshap", segmentation="slic:n=many"), "n must be a number"),
    (dict(method="kernelshap", segmentation="slic:size=3"), "(n, compactness, sigma)"),
    (dict(method="lime", n_samples=1), "lime needs n_samples >= 2"),
    (dict(method="rise", p=1.5), "p must be in [0, 1]"),
    (dict(method="sbsm", window=0), "window and stride must be positive"),
])
def test_bad_parameters_are_explain_errors_before_any_pass(random_images, params, message):
    model = tiny_gap()
    q, n = random_images(2, seed=8)
    with pytest.raises(ExplainError) as info:
        explain(model, q, [n], **params)
    assert message in str(info.value)
    if params["method"] != "lime" or "n_samples" not in params:
        assert len(FEATURE_CACHE) == 0  # refused before the first forward


def test_segmentation_specs_parse_with_defaults_and_round_trip():
    seg = parse_segmentation("slic:n=8")
    assert seg == Segmentation("slic", {"n": 8, "compactness": 20.0, "sigma": 1.0})
    assert str(seg) == "slic:n=8,compactness=20,sigma=1" and parse_segmentation(str(seg)) == seg
    assert parse_segmentation("quickshift").params == {"kernel_size": 4.0, "max_dist": 200.0, "ratio": 0.2}
    own = method_segmentation("slic:compactness=30", n=16, compactness=10)
    assert own.params == {"n": 16, "compactness": 30.0, "sigma": 1.0}  # the spec's key wins, the method fills n


def test_durations_read_at_a_glance():
    assert [format_seconds(s) for s in (0.2, 12, 240, 3900)] == ["< 1 s", "12 s", "4 min", "1 h 05 min"]
    est = CostEstimate("rise", forward=4002, backward=0, seconds=240, seconds_per_pass=0.06)
    assert est.describe() == "rise: 4,002 forward passes, about 4 min on this machine"
