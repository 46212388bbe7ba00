"""Every "methods.md N.M" reference in the code and docs names a section of docs/methods.md (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "methods.md"
REFERENCE = re.compile(r"methods\.md[\s,:]*((?:\d+(?:\.\d+)?(?:\s*(?:,|/|and)\s*(?=\d))?)+)")
SEARCHED = ["simx", "app_pages", "benchmarks", "docs", "README.md", "app.py"]


def sections() -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", DOC.read_text(encoding="utf-8"), flags=re.M)
    return set(heads)


def references() -> dict[str, list[str]]:
    """section number -> the files that cite it."""
    out: dict[str, list[str]] = {}
    files = []
    for name in SEARCHED:
        path = REPO / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".md")]
    for path in files:
        if path == DOC:
            continue
        for match in REFERENCE.finditer(path.read_text(encoding="utf-8", errors="ignore")):
            for number in re.findall(r"\d+(?:\.\d+)?", match.group(1)):
                out.setdefault(number, []).append(str(path.relative_to(REPO)))
    return out


def test_the_reference_pattern_reads_lists():
    found = [re.findall(r"\d+(?:\.\d+)?", m.group(1)) for m in REFERENCE.finditer(
        "(methods.md 3.6 / 8) and (methods.md 4.2, 4.3, 7.3) but not methods.md version 2")]
    assert found == [["3.6", "8"], ["4.2", "4.3", "7.3"]]


def test_every_methods_md_reference_resolves():
    have = sections()
    assert {"1", "2.1", "3.3", "6.4", "7.1", "10", "11.1"} <= have
    refs = references()
    assert len(refs) > 20  # the code does cite the document
    missing = {number: files for number, files in refs.items() if number not in have}
    assert missing == {}
