"""The dashboard served on a private copy of the real demo index (the default model on the demo scenes), for the
browser tests that drive a real model: one server per test module, and the index and label store it serves."""

from __future__ import annotations

from tests.e2e.test_browser import free_port, start_server, stop_server
from tests.real_demo import private_copy

#: The demo index the real-model servers open.
INDEX = "scenes"


def real_demo_server(tmp_path_factory, name: str, user: str = "e2e"):
    """Serve a private copy (folder ``name``) of the real demo index as ``user``; a generator for a module-scoped
    fixture: yields ``{"url", "root"}`` and stops the server afterwards."""
    root = private_copy(tmp_path_factory, name)
    port = free_port()
    proc = start_server(root, port, user=user)
    try:
        yield {"url": f"http://localhost:{port}", "root": root}
    finally:
        stop_server(proc)


def index(server):
    """The served demo index, opened in this process."""
    from simx.index import open_index

    return open_index(INDEX, root=server["root"])


def store(server):
    """The served demo index's label store, opened in this process."""
    from simx.labels import open_labels

    return open_labels(INDEX, root=server["root"])
