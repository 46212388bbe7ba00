"""``simx explain --method jointcam`` draws correspondence lines, or a projected point/box, on a tiny index."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from simx.errors import SimxError
from simx.explain import cli as explain_cli
from simx.index import build_index

TINY = "python:simx.models.toy:tiny_linear"


@pytest.fixture
def tiny_root(tmp_path, random_images):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i, im in enumerate(random_images(3, seed=5)):
        im.save(gallery / f"{i}.png")
    root = tmp_path / "indexes"
    build_index(gallery, "tiny", model=TINY, root=root, workers=0, progress=False)
    return root


def _figure(tmp_path, root, *extra):
    out = tmp_path / "joint.png"
    code = explain_cli.main(["tiny", "0.png", "1.png", "--method", "jointcam", "--root", str(root),
                             "--no-faithfulness", "--out", str(out), *extra])
    assert code == 0
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def test_point_box_and_lines_draw_different_figures(tmp_path, tiny_root):
    lines = _figure(tmp_path, tiny_root)
    point = _figure(tmp_path, tiny_root, "--point", "10,20")
    box = _figure(tmp_path, tiny_root, "--box", "4,4,30,30")
    def differ(a, b):
        return a.shape != b.shape or np.abs(a - b).mean() > 0.1

    # a projection draws a heat map (and its colour bar) instead of lines; a box projects another map than a point
    assert differ(lines, point) and differ(lines, box) and differ(point, box)
    assert point.shape[1] > lines.shape[1] * 0.9 and (point.std() > 10)


@pytest.mark.parametrize("extra, message", [
    (["--point", "10"], "2 comma-separated numbers"),
    (["--box", "1,2,3"], "4 comma-separated numbers"),
    (["--point", "1,2", "--box", "1,2,3,4"], "not both"),
])
def test_bad_point_and_box(tmp_path, tiny_root, extra, message):
    parser = argparse.ArgumentParser()
    explain_cli.add_arguments(parser)
    ns = parser.parse_args(["tiny", "0.png", "1.png", "--method", "jointcam", "--root", str(tiny_root), *extra])
    with pytest.raises(SimxError, match=message):
        explain_cli.run(ns)


def test_point_needs_a_joint_method(tiny_root):
    parser = argparse.ArgumentParser()
    explain_cli.add_arguments(parser)
    ns = parser.parse_args(["tiny", "0.png", "1.png", "--method", "gradcam", "--point", "3,4",
                            "--root", str(tiny_root)])
    with pytest.raises(SimxError, match="apply to joint methods"):
        explain_cli.run(ns)
