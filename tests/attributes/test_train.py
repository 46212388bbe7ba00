"""Training the attribute predictor: loss goes down, mAP beats chance, L_heat does its job, caches and files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simx.attribute_training import (TrainConfig, compute_features, compute_saliency, heat_loss, mean_average_precision,
                                     nearest_references, split_items, train_predictor)
from simx.attributes import AttributeHead, AttributePredictor, EmptyVocabularyError, PredictorError, load_predictor
from simx.attributes.predictor import spatial_softmax
from simx.data import Item, open_gallery
from simx.models.toy import tiny_gap


def _model():
    return tiny_gap(channels=32, seed=0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shapes_manifest):
    """One predictor without and one with L_heat (searchcam saliency: closed form, fast), same split and cache."""
    items = open_gallery(shapes_manifest)
    model = _model()
    cache = tmp_path_factory.mktemp("attr-cache")
    base = dict(epochs=15, heat_images=40, heat_refs=2, saliency="searchcam", seed=0)
    plain = train_predictor(model, items, cache / "plain", TrainConfig(heat=False, **base), cache_dir=cache,
                            progress=False)
    heat = train_predictor(model, items, cache / "heat", TrainConfig(heat=True, heat_weight=2.0, **base),
                           cache_dir=cache, progress=False)
    return {"items": items, "model": model, "cache": cache, "plain": plain, "heat": heat}


def test_training_reduces_the_loss_and_beats_chance(trained):
    m = trained["plain"].metrics
    hist = m["history"]
    assert hist[-1]["loss_cls"] < 0.8 * hist[0]["loss_cls"]
    # the colours are unambiguous: near-perfect; the whole vocabulary clearly above the chance level
    colour_ap = [v for k, v in m["test_ap"].items() if k.startswith("colour:")]
    assert len(colour_ap) == 3 and np.mean(colour_ap) > 0.9
    assert m["test_map"] > m["test_chance_map"] + 0.2
    assert m["n_train"] > 0 and m["n_val"] > 0 and m["n_test"] > 0


def test_saliency_supervision_makes_attribute_maps_match_the_saliency(trained):
    """L_heat of the heat-trained head, on the cached saliency maps, is below that of the head trained without."""
    heat = trained["heat"]
    assert heat.predictor.training["heat"] is True
    info = heat.predictor.training["saliency_info"]
    assert info["method"] == "searchcam" and info["maps"] > 0
    hist = heat.metrics["history"]
    assert hist[-1]["loss_heat"] < hist[0]["loss_heat"]
    # recompute L_heat of both heads on the same saliency maps
    items, model, cache = trained["items"], trained["model"], trained["cache"]
    feats, _ = compute_features(model, items, cache, progress=False)
    meta = json.loads((cache / "saliency.json").read_text())
    ids = [json.loads(e)[0] for e in meta["entries"]]
    rows = np.array([[it.id for it in items].index(i) for i in ids])
    sal = np.load(cache / "saliency.npy")
    ok = np.isfinite(sal).all(axis=(2, 3))
    f = torch.from_numpy(np.asarray(feats[rows], dtype=np.float32))
    losses = {}
    for key in ("plain", "heat"):
        pred = trained[key].predictor
        y = torch.from_numpy(pred.vocabulary.targets([items[r] for r in rows]).astype(np.float32))
        with torch.no_grad():
            maps, _ = pred.head(f)
        losses[key] = float(heat_loss(maps, torch.from_numpy(np.nan_to_num(sal)), torch.from_numpy(ok), y))
    assert losses["heat"] < losses["plain"]


def test_features_are_cached_once_without_pickle(trained):
    cache = trained["cache"]
    path = cache / "features.npy"
    before = path.stat().st_mtime_ns
    feats, valid = compute_features(trained["model"], trained["items"], cache, progress=False)
    assert path.stat().st_mtime_ns == before  # reused, not recomputed
    arr = np.load(path, allow_pickle=False)
    assert arr.dtype == np.float16 and arr.shape[0] == len(trained["items"]) and valid.all()
    assert np.array_equal(np.asarray(feats), arr)
    np.load(cache / "saliency.npy", allow_pickle=False)


def test_predictor_files_round_trip(trained):
    pred = trained["heat"].predictor
    folder = trained["heat"].path
    assert {p.name for p in folder.iterdir()} == {"weights.safetensors", "vocabulary.json", "predictor.json"}
    meta = json.loads((folder / "predictor.json").read_text())
    assert meta["format"] == 1 and meta["model"]["spec"] == trained["model"].spec
    assert len(meta["thresholds"]) == len(pred.vocabulary)
    back = load_predictor(folder)
    x = torch.randn(3, 32, 16, 16)
    assert torch.allclose(back.predict(x), pred.predict(x))
    assert back.vocabulary.names == pred.vocabulary.names
    back.check_model(trained["model"])
    with pytest.raises(PredictorError, match="another model"):
        back.check_model(tiny_gap(channels=16))
    (folder.parent / "foreign").mkdir()
    (folder.parent / "foreign" / "predictor.json").write_text('{"format": 42}')
    with pytest.raises(PredictorError, match="format 42"):
        AttributePredictor.load(folder.parent / "foreign")
    with pytest.raises(PredictorError, match="no attribute predictor"):
        load_predictor(folder.parent / "nowhere")


def test_split_is_deterministic_and_stable_when_the_gallery_grows():
    ids = [f"img{i}" for i in range(200)]
    a = split_items(ids, 0.2, 0.2, seed=3)
    b = split_items(ids + [f"new{i}" for i in range(50)], 0.2, 0.2, seed=3)
    assert list(a) == list(b[:200])
    assert set(a) == {"train", "val", "test"} and 0.1 < (a == "test").mean() < 0.3
    assert set(split_items(["x", "y", "z"], 0.2, 0.2)) == {"train", "val", "test"}


def test_mean_average_precision_and_chance():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    perfect, aps, chance = mean_average_precision(y, y.astype(float), ["a", "b"])
    assert perfect == 1.0 and aps == {"a": 1.0, "b": 1.0} and chance == pytest.approx((0.5 + 0.25) / 2)
    worst, _, _ = mean_average_precision(y, 1.0 - y, ["a", "b"])
    assert worst < 0.6


def test_heat_loss_is_zero_for_a_matching_ground_truth_map_only():
    sal = torch.randn(1, 1, 4, 4)
    z = (sal - sal.mean()) / sal.std()
    maps = torch.stack([z[0, 0], torch.randn(4, 4)]).unsqueeze(0)  # attribute 0 matches, 1 does not
    ok = torch.ones(1, 1, dtype=torch.bool)
    assert float(heat_loss(maps, sal, ok, torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
    # the matching map belongs to a non-ground-truth attribute: it must not count (-inf mask, methods.md 4.3)
    assert float(heat_loss(maps, sal, ok, torch.tensor([[0.0, 1.0]]))) > 0.01
    assert torch.allclose(spatial_softmax(maps).sum(-1), torch.ones(1, 2))


def test_saliency_cache_reuses_entries(tmp_path, trained):
    items, model = trained["items"], trained["model"]
    emb = model.embed_images([__import__("simx.data", fromlist=["load_image"]).load_image(it.path) for it in items[:6]])
    refs = nearest_references(emb, [0, 1], 2)
    assert all(len(r) == 2 and q not in r for q, r in zip([0, 1], refs))
    a, ok = compute_saliency(model, items, [0, 1], refs, (16, 16), "searchcam", {}, 0, tmp_path, progress=False)
    stamp = (tmp_path / "saliency.npy").stat().st_mtime_ns
    b, ok2 = compute_saliency(model, items, [0, 1], refs, (16, 16), "searchcam", {}, 0, tmp_path, progress=False)
    assert ok.all() and ok2.all() and np.array_equal(a, b)
    assert (tmp_path / "saliency.npy").stat().st_mtime_ns == stamp


def test_training_without_attributes_is_refused(tmp_path, shapes_manifest):
    items = [Item(id=it.id, path=it.path) for it in open_gallery(shapes_manifest)[:10]]
    with pytest.raises(EmptyVocabularyError):
        train_predictor(_model(), items, None, TrainConfig(epochs=1, heat=False), progress=False)


def test_attribute_head_shapes():
    head = AttributeHead(8, 5)
    maps, scores = head(torch.randn(2, 8, 7, 7))
    assert maps.shape == (2, 5, 7, 7) and scores.shape == (2, 5)
    assert head.conv.bias is None and tuple(head.conv.weight.shape) == (5, 8, 3, 3)
    assert torch.allclose(scores, maps.mean(dim=(2, 3)) + head.bias)


def test_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    from simx.attribute_training import average_precision

    rng = np.random.default_rng(0)
    for trial in range(20):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        s = np.round(rng.random(40), 1 if trial % 2 else 3)  # coarse rounding makes ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_saliency_cache_resumes_and_keeps_earlier_entries(tmp_path, trained, monkeypatch):
    import simx.explain as explain_pkg

    items, model = trained["items"], trained["model"]
    calls = []
    real = explain_pkg.explain

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(explain_pkg, "explain", counting)
    refs = [[5, 6], [7, 8], [9, 10]]
    compute_saliency(model, items, [0], refs[:1], (16, 16), "searchcam", {}, 0, tmp_path, progress=False)
    assert len(calls) == 1
    both, ok = compute_saliency(model, items, [0, 1, 2], refs, (16, 16), "searchcam", {}, 0, tmp_path, progress=False)
    assert len(calls) == 3 and ok.all()  # only the two new queries were computed
    only_last, _ = compute_saliency(model, items, [2], refs[2:], (16, 16), "searchcam", {}, 0, tmp_path,
                                    progress=False)
    assert len(calls) == 3 and np.array_equal(only_last[0], both[2])
    again, _ = compute_saliency(model, items, [0, 1], refs[:2], (16, 16), "searchcam", {}, 0, tmp_path,
                                progress=False)
    assert len(calls) == 3 and np.array_equal(again, both[:2])  # entries outside the request were kept
