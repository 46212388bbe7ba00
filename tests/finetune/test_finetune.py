"""simx train on a tiny model and gallery with planted labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.finetune.conftest import TOY, plant_labels

FAST = dict(epochs=25, patience=25, lr=3e-3, seed=0)


@pytest.fixture()
def trained(root):
    from simx.training import TrainConfig, train_index

    planted = plant_labels(root)
    result = train_index("tiny", root / "model", TrainConfig(**FAST), root=root)
    return root, planted, result


def test_training_lowers_the_loss_and_ranks_the_bad_matches_lower(trained):
    from simx.diff import exact_ranks
    from simx.index import build_index, open_index

    root, planted, result = trained
    hist = result.record["history"]
    best = hist[result.record["best_epoch"]]
    assert best["train_loss"] < 0.8 * hist[0]["train_loss"]
    build_index(open_index("tiny", root=root).meta["source"], "tiny-ft", model=result.spec, root=root, workers=0,
                progress=False, fit="squash")
    before, after = open_index("tiny", root=root), open_index("tiny-ft", root=root)
    bad = [(q, b) for q, b, _ in planted]
    r0, r1 = exact_ranks(before, bad), exact_ranks(after, bad)
    assert (r0 == 1).all()  # planted on the first neighbour
    assert r1.mean() > r0.mean() and (r1 > r0).sum() > len(bad) / 2


def test_weights_reload_strictly_and_the_record_says_what_was_done(trained):
    from simx.data import load_image
    from simx.errors import WeightsError
    from simx.index import open_index
    from simx.models import load_model
    from simx.training import RECORD_FILE, SPEC_FILE, WEIGHTS_FILE

    root, planted, result = trained
    out = root / "model"
    assert result.spec == f"{TOY}@{out / WEIGHTS_FILE}"
    assert (out / SPEC_FILE).read_text().strip() == result.spec
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["spec"] == result.spec and record["reload_max_abs_difference"] <= 1e-4
    assert record["labels"]["verdicts"] == {"bad": len(planted), "good": len(planted)}
    assert set(record["split"]["train_queries"]) | set(record["split"]["val_queries"]) == {q for q, _, _ in planted}
    assert not set(record["split"]["train_queries"]) & set(record["split"]["val_queries"])
    assert record["trainable"]["groups"] == ["trunk.2", "head"] and record["trainable"]["cached_trunk"]
    assert record["command"] and "simx index build" in record["rebuild_command"]

    index = open_index("tiny", root=root)
    x = torch.stack([index.model.preprocess(load_image(index.item(i).path)) for i in index.ids[:3]])
    old, new = load_model(TOY, cache=False), load_model(result.spec, cache=False)
    assert not torch.allclose(old.embed(x), new.embed(x))  # the weights changed ...
    again = load_model(result.spec, cache=False)
    assert torch.equal(again.embed(x), new.embed(x))  # ... and reload exactly
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(f"python:simx.models.toy:tiny_mlp@{out / WEIGHTS_FILE}", cache=False)


def test_labels_are_only_read(root):
    from simx.labels import open_labels
    from simx.training import TrainConfig, train_index

    plant_labels(root)
    store = open_labels("tiny", root=root)
    before = ([lab.to_dict() for lab in store.list(index="tiny")], store.history(index="tiny"))
    train_index("tiny", root / "m", TrainConfig(epochs=1, seed=0), root=root)
    assert ([lab.to_dict() for lab in store.list(index="tiny")], store.history(index="tiny")) == before


def test_an_index_without_labels_is_refused_with_what_to_do(root, capsys):
    from simx.cli import main
    from simx.training import TrainingError, train_index

    with pytest.raises(TrainingError, match="has no labels.*label some matches first"):
        train_index("tiny", root / "m", root=root)
    assert main(["train", "tiny", "--out", str(root / "m"), "--root", str(root)]) != 0
    assert "label some matches first" in capsys.readouterr().err
    assert not (root / "m").exists()


def test_bad_labels_without_any_positive_say_so(root):
    from simx.labels import open_labels
    from simx.training import TrainConfig, TrainingError, train_index

    open_labels("tiny", root=root).put("tiny", "red/red0.png", "blue/blue0.png", "bad", user="ann")
    with pytest.raises(TrainingError, match="no triplet.*good"):
        train_index("tiny", root / "m", TrainConfig(same_label=False), root=root)


def test_out_is_not_overwritten_without_force(root):
    from simx.training import TrainConfig, TrainingError, train_index

    plant_labels(root)
    (root / "m").mkdir()
    (root / "m" / "keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="--force"):
        train_index("tiny", root / "m", TrainConfig(epochs=1), root=root)
    assert (root / "m" / "keep.txt").read_text() == "mine"
    train_index("tiny", root / "m", TrainConfig(epochs=1), root=root, force=True)
    assert not (root / "m" / "keep.txt").exists() and (root / "m" / "weights.safetensors").is_file()


def test_similarity_mining_constraint_runs_through_the_whole_network(root):
    from simx.training import TrainConfig, train_index

    plant_labels(root)
    r = train_index("tiny", root / "m", TrainConfig(epochs=2, patience=5, sm_weight=0.5, lr=3e-3), root=root)
    rows = r.record["history"][1:]
    assert all(np.isfinite(row["mean_sm_loss"]) and row["mean_sm_loss"] >= 0 for row in rows)
    assert r.record["loss"]["l_sm"]["gamma"] == 0.5 and r.record["config"]["sm_batch"] is None


def test_groups_and_the_frozen_trunk_replay_exactly():
    from simx.models import load_model
    from simx.training.split import FrozenCut, default_unfreeze, parameter_groups, set_trainable

    model = load_model(TOY, cache=False)
    groups = parameter_groups(model)
    assert [g.name for g in groups] == ["trunk.0", "trunk.2", "head"]
    n = default_unfreeze(groups)
    assert n == 2
    params = set_trainable(model, groups, n)
    assert sum(p.numel() for p in params) == groups[1].n_params + groups[2].n_params
    assert not any(p.requires_grad for p in model.net["trunk"][0].parameters())
    x = torch.randn(3, 3, 64, 64)
    cut = FrozenCut(model, groups[1])
    check = cut.calibrate(x)
    assert check["relative_error"] < 1e-5
    with torch.no_grad():
        assert torch.allclose(cut.embed_from(cut.prefix_features(x)), model.embed(x), atol=1e-5)


def test_cli_trains_builds_the_new_index_and_points_to_diff(root, capsys):
    from simx.cli import main
    from simx.index import open_index

    plant_labels(root)
    assert main(["train", "tiny", "--out", str(root / "m"), "--epochs", "2", "--build", "tiny-ft",
                 "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "training loss" in out and "simx diff tiny tiny-ft" in out
    built = open_index("tiny-ft", root=root)
    spec = (root / "m" / "spec.txt").read_text().strip()
    assert built.meta["model"]["spec"] == spec and built.ids == open_index("tiny", root=root).ids
    assert main(["diff", "tiny", "tiny-ft", "--root", str(root)]) == 0
    assert "labelled pairs fixed / regressed / unchanged" in capsys.readouterr().out


def test_same_label_positives_follow_the_relevance_rule(root):
    from simx.index import open_index
    from simx.labels import open_labels
    from simx.relevance import shares_label
    from simx.training import collect_triplets

    plant_labels(root)
    index = open_index("tiny", root=root)
    store = open_labels("tiny", root=root)
    rows, record = collect_triplets(store, index, same_label=True)
    same = [r for r in rows if r["positive_source"] == "same_label"]
    assert same and all(shares_label(index.item(r["query"]), index.item(r["positive"])) for r in same)
    bad = {(lab.query_id, lab.neighbour_id) for lab in store.list(index="tiny", verdict="bad")}
    assert not any((r["query"], r["positive"]) in bad for r in rows)
    only_good, record2 = collect_triplets(store, index, same_label=False)
    assert {r["positive_source"] for r in only_good} == {"good"} and len(only_good) < len(rows)
    assert record["positive_sources"]["same_label"] == len(same)


@pytest.mark.slow
def test_default_at_file_loads_the_default_architecture_strictly(tmp_path):
    from safetensors.torch import save_file

    from simx.errors import WeightsError
    from simx.models import load_model

    base = load_model("default", cache=False, device="cpu")
    state = {k: v.clone().contiguous() for k, v in base.net.state_dict().items()}
    state["conv_head.weight"] = state["conv_head.weight"] * 1.5
    save_file(state, str(tmp_path / "w.safetensors"))
    tuned = load_model(f"default@{tmp_path / 'w.safetensors'}", cache=False, device="cpu")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before = base.embed(x)
        base.net.load_state_dict(state)
        assert torch.equal(tuned.embed(x), base.embed(x)) and not torch.allclose(tuned.embed(x), before)
    assert tuned.spec.startswith("default@") and tuned.layer == base.layer == "bn2"
    del state["bn2.weight"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match="1 missing"):
        load_model(f"default@{tmp_path / 'bad.safetensors'}", cache=False, device="cpu")
