"""The Streamlit layer keeps to Streamlit's public API and does each page's set-up once, in app.py (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.app.conftest import APP, RUN_TIMEOUT_S

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

REPO = Path(APP).parent
DASHBOARD_FILES = [REPO / "app.py", *sorted((REPO / "app_pages").glob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_pages_folder_beside_the_entry_script():
    """A ``pages/`` folder would switch Streamlit to its old multipage mode: a deep link would run a page
    without app.py."""
    assert not (REPO / "pages").exists()
    assert (REPO / "app_pages" / "explore.py").is_file()


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_uses_only_public_streamlit_api_and_leaves_sys_path_alone(path):
    private = [m for m in imported_modules(path) if m.startswith("streamlit.") and m != "streamlit.components.v1"]
    assert private == [], f"{path.name} imports Streamlit internals: {private}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    sys_path = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    assert not sys_path and "PagesManager" not in names


@pytest.mark.parametrize("path", sorted((REPO / "app_pages").glob("[!_]*.py")), ids=lambda p: p.name)
def test_pages_leave_the_index_set_up_to_app_py(path):
    text = path.read_text(encoding="utf-8")
    assert "ui.current_index()" in text
    assert "ui.sidebar_index()" not in text and "ui.sidebar_status(" not in text


@pytest.mark.parametrize("page,title", [("app_pages/failures.py", "Failures"), ("app_pages/labels.py", "Labels")])
def test_a_page_without_an_index_shows_its_title_and_how_to_build_one(tmp_path, monkeypatch, page, title):
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == [title]
    assert "simx index build" in "\n".join(i.value for i in at.info)
