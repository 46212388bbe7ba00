"""simx diff on two indexes of one gallery built with different tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest


def direct(index, k: int) -> dict[str, dict]:
    """P@1, P@k, AP@k and the top-k of every labelled query, by brute force over the stored embeddings."""
    emb = np.asarray(index.embeddings, dtype=np.float64)
    labels = [it.label for it in index.items]
    out = {}
    for i, q in enumerate(index.ids):
        sims = emb @ emb[i]
        sims[i] = -np.inf
        top = np.argsort(-sims, kind="stable")[:k]
        rel = np.array([labels[j] == labels[i] for j in top], dtype=float)
        n_rel = sum(lab == labels[i] for lab in labels) - 1
        prec = np.cumsum(rel) / np.arange(1, k + 1)
        out[q] = {"p1": rel[0], "pk": rel.sum() / k, "ap": (prec * rel).sum() / min(n_rel, k),
                  "top": [index.ids[j] for j in top]}
    return out


def test_per_query_deltas_match_a_direct_computation(root):
    from simx.diff import compare_indexes
    from simx.index import open_index

    a, b = open_index("tiny", root=root), open_index("tiny-b", root=root)
    k = 4
    d = compare_indexes(a, b, k=k)
    da, db = direct(a, k), direct(b, k)
    assert len(d.per_query) == 15 and d.has_metrics
    for row in d.per_query.itertuples(index=False):
        for m in ("p1", "pk", "ap"):
            assert getattr(row, f"d_{m}") == pytest.approx(db[row.id][m] - da[row.id][m], abs=1e-9)
        assert list(row.neighbours_a) == da[row.id]["top"] and list(row.neighbours_b) == db[row.id]["top"]
        assert set(row.entered) == set(db[row.id]["top"]) - set(da[row.id]["top"])
        assert set(row.left) == set(da[row.id]["top"]) - set(db[row.id]["top"])
        assert row.overlap == pytest.approx(len(set(da[row.id]["top"]) & set(db[row.id]["top"])) / k)
    assert list(d.per_query["d_ap"]) == sorted(d.per_query["d_ap"])  # worst first
    assert d.overall["metrics"]["mAP@k"]["delta"] == pytest.approx(
        np.mean([db[q]["ap"] for q in db]) - np.mean([da[q]["ap"] for q in da]), abs=1e-9)
    assert (d.worst(100)["d_ap"] < 0).any() or (d.worst(100)["d_p1"] < 0).any() or d.worst(100).empty


def test_labelled_pairs_are_fixes_or_regressions_by_exact_rank(root):
    from simx.diff import compare_indexes, exact_ranks
    from simx.index import open_index
    from simx.labels import open_labels

    a, b = open_index("tiny", root=root), open_index("tiny-b", root=root)
    k = 3
    da, db = direct(a, 14), direct(b, 14)
    q = next(q for q in a.ids if set(da[q]["top"][:k]) - set(db[q]["top"][:k]))
    gone = next(n for n in da[q]["top"][:k] if n not in db[q]["top"][:k])
    store = open_labels("tiny", root=root)
    store.put("tiny", q, gone, "bad", user="ann")
    q2 = next(x for x in a.ids if x != q and set(da[x]["top"][:k]) - set(db[x]["top"][:k]))
    gone2 = next(n for n in da[q2]["top"][:k] if n not in db[q2]["top"][:k])
    store.put("tiny", q2, gone2, "good", user="bob")
    d = compare_indexes(a, b, k=k)
    pairs = {(r.query, r.neighbour): r for r in d.pairs.itertuples(index=False)}
    assert pairs[(q, gone)].status == "fixed" and pairs[(q2, gone2)].status == "regressed"
    assert d.pairs.iloc[0]["status"] == "regressed"  # regressions first
    for (qq, nn), r in pairs.items():
        assert r.rank_a == da[qq]["top"].index(nn) + 1 and r.rank_b == db[qq]["top"].index(nn) + 1
    assert list(exact_ranks(a, [(q, gone)])) == [pairs[(q, gone)].rank_a]
    assert d.overall["pairs"] == {"fixed": 1, "regressed": 1, "unchanged": 0}


def test_mismatched_galleries_are_refused(root, capsys):
    from simx.cli import main
    from simx.diff import DiffError, compare_indexes
    from simx.index import open_index

    with pytest.raises(DiffError, match="not over the same gallery: 3 ids only in 'tiny'"):
        compare_indexes(open_index("tiny", root=root), open_index("part", root=root))
    assert main(["diff", "tiny", "part", "--root", str(root)]) != 0
    assert "not over the same gallery" in capsys.readouterr().err


def test_same_files_touched_later_still_compare_but_changed_files_do_not(root, tmp_path):
    import os
    import shutil

    from simx.diff import DiffError, compare_indexes
    from simx.index import build_index, open_index

    a = open_index("tiny", root=root)
    copy = tmp_path / "copy"
    shutil.copytree(a.meta["source"], copy)
    for p in copy.rglob("*.png"):
        os.utime(p, ns=(1, 1))  # same bytes, another modification time
    build_index(copy, "copy", model="python:simx.models.toy:tiny_mlp", root=root, workers=0, progress=False)
    same = compare_indexes(a, open_index("copy", root=root), k=3)
    assert len(same.per_query) == 15 and not any("other class labels" in n for n in same.notes)
    (copy / "red" / "red0.png").write_bytes((copy / "red" / "red1.png").read_bytes())
    build_index(copy, "changed", model="python:simx.models.toy:tiny_mlp", root=root, workers=0, progress=False)
    with pytest.raises(DiffError, match="1 different files.*red/red0.png"):
        compare_indexes(a, open_index("changed", root=root))


def test_a_relabelled_gallery_is_flagged(root, tmp_path):
    import csv

    from simx.diff import compare_indexes
    from simx.index import build_index, open_index

    src = open_index("tiny", root=root)
    for name, renamed in (("m1", {}), ("m2", {"red/red0.png": "blue", "red/red1.png": "blue"})):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "path", "label"])
            for it in src.items:
                w.writerow([it.id, it.path, renamed.get(it.id, it.label)])
        build_index(path, name, model="python:simx.models.toy:tiny_linear", root=root, workers=0, progress=False)
    d = compare_indexes(open_index("m1", root=root), open_index("m2", root=root), k=3)
    assert any("2 items carry other class labels" in n and "red/red0.png" in n for n in d.notes)


def test_cli_json_and_html(root, tmp_path, capsys):
    from simx.cli import main

    html = tmp_path / "diff.html"
    assert main(["diff", "tiny", "tiny-b", "-k", "4", "--json", "--html", str(html), "--root", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == "tiny" and len(out["per_query"]) == 15 and out["overall"]["k"] == 4
    text = html.read_text()
    assert "<img src=\"data:image/png;base64," in text and "tiny-b" in text and "precision@1" in text
    assert main(["diff", "tiny", "tiny-b", "--root", str(root)]) == 0
    assert "worst" in capsys.readouterr().out
    assert main(["diff", "tiny", "tiny-b", "--html", str(html), "--pair", "red/red0.png", "red/red1.png",
                 "--root", str(root)]) == 0
    text = html.read_text()
    assert "Pair <code>red/red0.png</code>" in text and text.count("data:image/png;base64,") == 6


def test_html_escapes_what_users_wrote(root):
    from simx.diff import compare_indexes, diff_report_html
    from simx.index import open_index

    d = compare_indexes(open_index("tiny", root=root), open_index("tiny-b", root=root), k=3)
    d.notes.append("<script>alert(1)</script>")
    text = diff_report_html(d)
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text


def test_explanations_of_one_pair_under_both_models(root):
    from simx.diff import explain_both, pair_pictures
    from simx.index import open_index

    a, b = open_index("tiny", root=root), open_index("tiny-b", root=root)
    ea, eb = explain_both(a, b, "red/red0.png", "red/red1.png", method="gradcam")
    assert ea.method == eb.method == "gradcam"
    assert ea.similarities[0] != pytest.approx(eb.similarities[0])
    pics = pair_pictures(ea, eb)
    assert pics["a"]["query"].shape == pics["b"]["neighbour"].shape == (64, 64, 3)
    assert pics["legend"].ndim == 3 and "one scale" in pics["note"]


def test_comparable_indexes_put_the_same_gallery_first(root):
    from simx.diff import comparable_indexes
    from simx.index import open_index

    assert comparable_indexes(open_index("tiny", root=root), root) == ["tiny-b", "part"]
