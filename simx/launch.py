"""Start the dashboard: find ``app.py`` and run it under Streamlit in a child process.

simx itself never imports Streamlit; this module only locates the dashboard's files and builds the command line.
In a source checkout the dashboard is ``app.py`` beside the ``simx`` folder; in an installed wheel it is the package
``simx_dashboard`` (see ``setup.py``). The Streamlit settings of ``.streamlit/config.toml`` are passed as command
line flags, because Streamlit reads that file only from the current folder and the user's home.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
from pathlib import Path

from .errors import SimxError

#: Environment variable naming the index the dashboard opens first (``simx dashboard --index NAME`` sets it).
INDEX_ENV = "SIMX_INDEX"


def dashboard_dir() -> Path:
    """The folder holding ``app.py``, ``app_pages/`` and ``.streamlit/``: the source checkout, else the installed
    ``simx_dashboard`` package."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "app.py").is_file() and (checkout / "app_pages").is_dir():
        return checkout
    spec = importlib.util.find_spec("simx_dashboard")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        if (folder / "app.py").is_file():
            return folder
    raise SimxError("the dashboard files (app.py, app_pages/) are not installed with this copy of simx; "
                    "reinstall it with `pip install simx` or run it from a source checkout")


def config_flags(folder: Path) -> list[str]:
    """``--section.key=value`` for every setting in ``folder/.streamlit/config.toml`` (none if it is absent)."""
    path = folder / ".streamlit" / "config.toml"
    if not path.is_file():
        return []
    flags = []
    for section, values in tomllib.loads(path.read_text(encoding="utf-8")).items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def dashboard_command(port: int | None = None, address: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The command line that serves the dashboard with this interpreter's Streamlit."""
    if importlib.util.find_spec("streamlit") is None:
        raise SimxError("Streamlit is not installed in this environment: pip install streamlit")
    folder = dashboard_dir()
    cmd = [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"), *config_flags(folder)]
    if port is not None:
        cmd.append(f"--server.port={port}")
    if address is not None:
        cmd.append(f"--server.address={address}")
    return cmd + list(extra or [])


def run_dashboard(index: str | None = None, root: str | None = None, port: int | None = None,
                  address: str | None = None, extra: list[str] | None = None) -> int:
    """Serve the dashboard until it is stopped; returns Streamlit's exit status."""
    import subprocess

    from .index.layout import index_root

    env = dict(os.environ)
    if index:
        env[INDEX_ENV] = index
    env["SIMX_INDEXES"] = str(index_root(root).resolve())  # the same folder the CLI would use from here
    cmd = dashboard_command(port, address, extra)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
