"""The real default model (EfficientNet-Lite0) on a small demo index, built once per test run and shared.

``scenes`` is the demo's scene gallery (real Tux Paint stamps composed on backgrounds, multi-label, with
attributes) at 40 scenes, embedded by the ``default`` model exactly as ``simx demo`` does; ``tiny`` is the toy
gallery of coloured squares (toy model), a second index to switch to. The build takes about a minute on a loaded
2-core machine, so it runs once for the whole session: pytest-xdist workers share it through a file lock beside
their temporary folders, and every test module gets its own copy of the index root (labels never leak).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

N_SCENES = 40
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _build(base: Path) -> Path:
    from simx.demo.build import build_demo
    from simx.index import build_index
    from tests.app.conftest import TOY, make_gallery

    root = base / "indexes"
    build_demo(["scenes"], n_scenes=N_SCENES, model="default", data=base / "data", root=root, progress=False)
    build_index(make_gallery(base / "tiny_gallery", per_label=6), "tiny", model=TOY, root=root, workers=0,
                progress=False)
    (base / "done").write_text("ok\n")
    return root


def shared_demo_root(tmp_path_factory) -> Path:
    """The index root holding ``scenes`` (real default model) and ``tiny`` (toy), built once per test run."""
    from filelock import FileLock

    assert STAMPS.is_dir(), f"{STAMPS} is missing: scripts/setup.sh installs Debian's tuxpaint-stamps"
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, the same for every xdist worker of this run
    base = shared / "simx_real_demo"
    with FileLock(str(shared / "simx_real_demo.lock")):
        if not (base / "done").exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            _build(base)
    return base / "indexes"


def private_copy(tmp_path_factory, name: str) -> Path:
    """A copy of the shared index root for one module (its labels and caches are its own)."""
    root = tmp_path_factory.mktemp(name) / "indexes"
    shutil.copytree(shared_demo_root(tmp_path_factory), root)
    return root
