"""How the command line behaves around the work: exit codes, a closed pipe, JSON output, ``python -m simx`` and the
dashboard launcher (which must find the dashboard's files and pass on the Streamlit settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simx import launch
from simx.cli import main

from .conftest import TINY, make_gallery, subprocess_env

REPO = Path(__file__).resolve().parents[2]


def test_usage_errors_exit_2_runtime_errors_exit_1(tmp_path, capsys):
    assert main(["demo", "nosuch", "--root", str(tmp_path)]) == 2
    assert "unknown demo gallery nosuch" in capsys.readouterr().err
    assert main(["index", "info", "absent", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["search"])  # argparse's own usage error
    assert exc.value.code == 2


def test_closed_pipe_stops_quietly(tmp_path):
    root = tmp_path / "idx"
    gallery = make_gallery(tmp_path / "g", {"red": 40, "blue": 40})
    env = subprocess_env()
    build = subprocess.run([sys.executable, "-m", "simx", "index", "build", str(gallery), "--name", "g", "--model",
                            TINY, "--root", str(root), "--workers", "0", "-q"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    # `simx eval g -k 5 | head -1`: the reader leaves after one line of a long report
    proc = subprocess.Popen([sys.executable, "-m", "simx", "eval", "g", "-k", "5", "--show", "80", "--root", str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert first.startswith(b"g: leave-one-out")
    assert "Traceback" not in err and "BrokenPipe" not in err and err.strip() == ""
    assert code in (0, 141)


def test_index_build_json(tmp_path, capsys):
    gallery = make_gallery(tmp_path / "g", {"red": 2, "blue": 2})
    (gallery / "red" / "broken.png").write_bytes(b"not an image")
    code = main(["index", "build", str(gallery), "--name", "g", "--model", TINY, "--root", str(tmp_path / "i"),
                 "--workers", "0", "-q", "--json"])
    meta = json.loads(capsys.readouterr().out)
    assert code == 0 and meta["name"] == "g" and meta["counts"]["embedded"] == 4
    assert [Path(s["path"]).name for s in meta["skipped"]] == ["broken.png"]


def test_python_dash_m_simx():
    out = subprocess.run([sys.executable, "-m", "simx", "--help"], env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "usage: simx" in out.stdout and "dashboard" in out.stdout


def test_dashboard_command_finds_the_app_and_passes_the_settings(monkeypatch):
    folder = launch.dashboard_dir()
    assert (folder / "app.py").is_file() and (folder / "app_pages" / "explore.py").is_file()
    cmd = launch.dashboard_command(port=8600, address="127.0.0.1")
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4] == str(folder / "app.py")
    # every setting of .streamlit/config.toml travels as a flag (Streamlit reads the file only from the cwd)
    assert "--server.enableXsrfProtection=true" in cmd and "--browser.gatherUsageStats=false" in cmd
    assert "--server.maxUploadSize=20" in cmd and cmd[-2:] == ["--server.port=8600", "--server.address=127.0.0.1"]
    seen = {}
    monkeypatch.setattr(subprocess, "call", lambda c, env: seen.update(cmd=c, env=env) or 0)
    assert main(["dashboard", "--index", "scenes", "--root", "rel/idx"]) == 0
    assert seen["env"][launch.INDEX_ENV] == "scenes"
    assert seen["env"]["SIMX_INDEXES"] == str((Path.cwd() / "rel" / "idx").resolve())


def test_manifest_extra_columns_are_listed(tmp_path, capsys):
    gallery = make_gallery(tmp_path / "g", {"red": 2})
    rows = ["path,id,label,photographer,licence"]
    for i, p in enumerate(sorted((gallery / "red").glob("*.png"))):
        rows.append(f"{p},shot-{i},red,Ana {i},CC-BY")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert main(["index", "build", str(tmp_path / "m.csv"), "--name", "m", "--model", TINY, "--root",
                 str(tmp_path / "i"), "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "info", "m", "--root", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert "other columns: licence, photographer" in out
    assert main(["search", "m", "shot-0", "-k", "1", "--json", "--root", str(tmp_path / "i")]) == 0
    assert json.loads(capsys.readouterr().out)["neighbours"][0]["id"] == "shot-1"
