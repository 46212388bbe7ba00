"""The simx command line: help texts, index build/list/info, search, eval, errors and the command registry."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from simx import cli
from simx.cli import build_parser, main

from .conftest import TINY, make_gallery, subprocess_env


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.fixture
def cli_index(gallery, root, capsys):
    code, out, _ = run(capsys, "index", "build", str(gallery), "--name", "g", "--model", TINY, "--root", str(root),
                       "--workers", "0", "-q")
    assert code == 0, out
    return root


def test_help_documents_every_command_and_option(capsys):
    top = help_of(capsys)
    for word in ("index", "search", "eval"):
        assert word in top
    build = help_of(capsys, "index", "build")
    for opt in ("--name", "--model", "--layer", "--metric", "--factory", "--batch-size", "--workers", "--device",
                "--fit", "--update", "--root", "--quiet", "SOURCE", "SIMX_INDEXES"):
        assert opt in build, opt
    assert "default: 64" in build  # defaults are shown
    for argv, opts in ((("index", "list"), ("--json", "--root")), (("index", "info"), ("NAME", "--json")),
                       (("search",), ("IMAGE_OR_ID", "-k", "--json")),
                       (("eval",), ("-k", "--json", "--csv", "--level", "{full,top}"))):
        text = help_of(capsys, *argv)
        for opt in opts:
            assert opt in text, (argv, opt)


def test_console_entry_point_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "simx.cli", "--help"], env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "usage: simx" in out.stdout


def test_build_list_info(cli_index, capsys):
    code, out, _ = run(capsys, "index", "list", "--root", str(cli_index))
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:4] == ["name", "indexed", "skipped", "dim"]
    assert row.split()[:6] == ["g", "12/12", "0", "12", "cosine", "Flat"]
    code, out, _ = run(capsys, "index", "list", "--root", str(cli_index), "--json")
    assert [e["name"] for e in json.loads(out)] == ["g"]
    code, out, _ = run(capsys, "index", "info", "g", "--root", str(cli_index))
    assert code == 0 and "python:simx.models.toy:tiny_linear" in out and "12 indexed of 12" in out
    code, out, _ = run(capsys, "index", "info", "g", "--root", str(cli_index), "--json")
    assert json.loads(out)["format_version"] == 2


def test_list_empty_root(tmp_path, capsys):
    code, out, _ = run(capsys, "index", "list", "--root", str(tmp_path / "none"))
    assert code == 0 and out.startswith("no indexes in")


def test_search_by_id_and_by_image(cli_index, gallery, capsys):
    code, out, _ = run(capsys, "search", "g", "red/0.png", "-k", "4", "--json", "--root", str(cli_index))
    assert code == 0
    res = json.loads(out)
    assert res["query_type"] == "id" and len(res["neighbours"]) == 4
    assert set(res["neighbours"][0]) == {"id", "path", "label", "score", "rank"}
    assert "red/0.png" not in [n["id"] for n in res["neighbours"]]
    assert [n["rank"] for n in res["neighbours"]] == [1, 2, 3, 4]
    code, out, _ = run(capsys, "search", "g", str(gallery / "blue" / "2.png"), "-k", "2", "--json",
                       "--root", str(cli_index))
    res = json.loads(out)
    assert res["query_type"] == "image" and res["neighbours"][0]["id"] == "blue/2.png"
    assert res["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    code, out, _ = run(capsys, "search", "g", "green/1.png", "--root", str(cli_index))
    lines = out.strip().splitlines()
    assert code == 0 and lines[1].split() == ["rank", "score", "label", "id", "path"] and len(lines) == 2 + 10


def test_eval_text_json_and_csv(cli_index, tmp_path, capsys):
    code, out, _ = run(capsys, "eval", "g", "-k", "3", "--root", str(cli_index), "--csv", str(tmp_path / "q.csv"))
    assert code == 0 and "precision@1" in out and "mAP@3" in out and "worst" in out
    with open(tmp_path / "q.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and list(rows[0]) == ["id", "label", "labels", "ap", "p1", "pk", "rk", "n_relevant",
                                                 "neighbours", "relevant"]
    assert len(rows[0]["neighbours"].split(";")) == 3 and set(rows[0]["relevant"].split(";")) <= {"True", "False"}
    assert "relevant = same label" in out
    code, out, _ = run(capsys, "eval", "g", "-k", "3", "--primary-label", "--root", str(cli_index))
    assert code == 0 and "relevant = same primary label" in out
    code, out, _ = run(capsys, "eval", "g", "-k", "3", "--json", "--level", "top", "--root", str(cli_index))
    res = json.loads(out)
    assert res["overall"]["n_queries"] == 12 and res["level"] == "top"
    assert 0.0 <= res["overall"]["mAP@k"] <= 1.0 and len(res["per_label"]) == 3


def test_runtime_errors_are_one_line_with_exit_code_1(cli_index, tmp_path, capsys):
    code, out, err = run(capsys, "search", "nope", "x.png", "--root", str(cli_index))
    assert code == 1 and err.startswith("error: no index named 'nope'") and "Traceback" not in err
    code, _, err = run(capsys, "search", "g", "not-an-id-nor-a-file", "--root", str(cli_index))
    assert code == 1 and "neither an id in index 'g' nor an image file" in err
    make_gallery(tmp_path / "flat", {"red": 2})
    for p in (tmp_path / "flat" / "red").iterdir():  # move images to the top: no labels
        p.rename(tmp_path / "flat" / p.name)
    run(capsys, "index", "build", str(tmp_path / "flat"), "--name", "nolabels", "--model", TINY,
        "--root", str(cli_index), "--workers", "0")
    code, _, err = run(capsys, "eval", "nolabels", "--root", str(cli_index))
    assert code == 1 and "has no labels" in err
    code, _, err = run(capsys, "index", "build", str(tmp_path / "missing"), "--name", "m", "--root", str(cli_index))
    assert code == 1 and "gallery source not found" in err
    code, _, err = run(capsys, "index", "build", str(tmp_path / "flat"), "--name", "c", "--model", TINY,
                       "--device", "cuda", "--root", str(cli_index))  # the tests hide CUDA (tests/conftest.py)
    assert code == 1 and "torch sees no CUDA device" in err
    with pytest.raises(SystemExit) as exc:  # argparse usage errors keep argparse's exit status 2
        main(["index", "build", "--name", "x"])
    assert exc.value.code == 2


def test_env_root_is_the_default(gallery, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path / "envroot"))
    code, _, _ = run(capsys, "index", "build", str(gallery), "--name", "e", "--model", TINY, "--workers", "0")
    assert code == 0 and (tmp_path / "envroot" / "e" / "meta.json").is_file()
    code, out, _ = run(capsys, "index", "list", "--json")
    assert [e["name"] for e in json.loads(out)] == ["e"]


def test_update_through_the_cli(cli_index, gallery, capsys):
    (gallery / "red" / "3.png").unlink()
    code, out, _ = run(capsys, "index", "build", str(gallery), "--name", "g", "--update", "--root", str(cli_index),
                       "--workers", "0")
    assert code == 0 and "update: 11 reused, 0 embedded, 1 removed" in out
    code, _, err = run(capsys, "index", "build", str(gallery), "--name", "g", "--update", "--metric", "ip",
                       "--root", str(cli_index), "--workers", "0")
    assert code == 1 and "cannot --update index 'g'" in err and "metric" in err


def test_no_progress_bar_when_quiet_or_not_a_terminal(gallery, root, capsys):
    code, _, err = run(capsys, "index", "build", str(gallery), "--name", "q", "--model", TINY, "--root", str(root),
                       "--workers", "0")
    assert code == 0 and "embedding q" not in err  # captured stderr is not a TTY
    assert cli._progress(build_parser().parse_args(["index", "list", "-q"])) is False


def test_registry_accepts_new_commands(monkeypatch, capsys):
    seen = {}

    def add(p):
        p.add_argument("--times", type=int, default=1)

    def run_hello(args):
        seen["times"] = args.times
        print("hello " * args.times)
        return 3

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("greet hello", add, run_hello, "say hello"),
                                          ("noop", lambda p: None, lambda a: None, "do nothing")])
    monkeypatch.setitem(cli.GROUPS, "greet", "greeting commands")
    assert "greeting commands" in help_of(capsys)
    assert main(["greet", "hello", "--times", "2"]) == 3 and seen == {"times": 2}
    assert "hello hello" in capsys.readouterr().out
    assert main(["noop"]) == 0
    assert "say hello" in help_of(capsys, "greet")
