"""Who labels: the labeller's name, asked for before the first label and kept across reloads, tabs and links.

The name lives in the session (``st.session_state["user"]``, the sidebar's name field) and in the browser's local
storage (``identity.js``, a components-v2 module), which hands it back to every new session of the same browser: a
reload, a new tab, a shared link. ``?user=NAME`` in a URL sets it too (a bookmark per person); it is never written
into the URL, so a link someone shares does not carry their name. ``$SIMX_USER`` is the server's default for a
single-person set-up. Without any of these there is no name, and labelling asks for one instead of saving under
"anonymous".
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _common as ui

_STORAGE = st.components.v2.component("simx_identity", js=(Path(__file__).with_name("identity.js")).read_text())
USER_KEY = "user"


def _stored(value_key: str = "simx_identity") -> None:
    """The browser's stored name arrived: use it unless this session already has one."""
    state = st.session_state.get(value_key)
    stored = state.get("stored") if hasattr(state, "get") else None
    if isinstance(stored, str) and stored.strip() and not st.session_state.get(USER_KEY):
        st.session_state[USER_KEY] = stored.strip()[:128]


def _typed() -> None:
    st.session_state["user_forget"] = not (st.session_state.get(USER_KEY) or "").strip()


def sidebar_identity() -> None:
    """The name field in the sidebar plus the storage bridge; drawn by app.py on every page."""
    if USER_KEY not in st.session_state:
        st.session_state[USER_KEY] = (ui.qp("user") or "").strip()[:128]
    with st.sidebar:
        st.text_input("Your name (for labels)", key=USER_KEY, max_chars=128, on_change=_typed,
                      help="Labels are saved under this name; this browser remembers it.")
        _STORAGE(key="simx_identity", data={"user": (st.session_state.get(USER_KEY) or "").strip(),
                                            "forget": bool(st.session_state.get("user_forget"))},
                 on_stored_change=_stored, height=0)


def ask_name(where: str) -> str | None:
    """The labeller's name; without one, a prompt in the page (labels wait for it) and None."""
    user = ui.current_user()
    if user:
        return user

    def take() -> None:
        typed = (st.session_state.get(f"user_prompt_{where}") or "").strip()[:128]
        if typed:
            st.session_state[USER_KEY] = typed
            st.session_state["user_forget"] = False

    st.warning("Who is labelling? Enter your name before the first label: labels are saved under it.",
               icon=":material/person:")
    st.text_input("Your name", key=f"user_prompt_{where}", max_chars=128, on_change=take)
    return None
