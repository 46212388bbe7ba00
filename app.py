"""simx dashboard: navigation between the pages (``streamlit run app.py``).

Pages live in ``app_pages/`` (one file each; not ``pages/``, which Streamlit would treat as an old-style multipage
folder and run its files without this one). This file does what every page needs before it draws, once: the page
configuration, the navigation, presentation mode, the index picker and the opened index (the pages read it with
``ui.current_index()``). All maths happens in ``simx``; the pages ask it and draw. State lives in the URL
(``st.query_params``). Streamlit puts this file's folder on ``sys.path``, so ``app_pages`` imports as a package.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import _common as ui
from app_pages import _identity

HERE = Path(__file__).resolve().parent
PAGES_DIR = HERE / "app_pages"

# the icon is a local file: an icon name (":material/...:") would make every browser fetch it from fonts.gstatic.com
st.set_page_config(page_title="simx: visual-search debugger", page_icon=str(PAGES_DIR / "assets" / "simx.png"),
                   layout="wide")

PAGES = [
    st.Page(str(PAGES_DIR / "explore.py"), title="Explore", icon=":material/search:", default=True),
    st.Page(str(PAGES_DIR / "review.py"), title="Review queue", icon=":material/rule:", url_path="review"),
    st.Page(str(PAGES_DIR / "failures.py"), title="Failures", icon=":material/report:", url_path="failures"),
    st.Page(str(PAGES_DIR / "embedding_map.py"), title="Embedding map", icon=":material/scatter_plot:",
            url_path="embedding_map"),
    st.Page(str(PAGES_DIR / "labels.py"), title="Labels", icon=":material/label:", url_path="labels"),
    st.Page(str(PAGES_DIR / "compare.py"), title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page(str(PAGES_DIR / "duplicates.py"), title="Duplicates", icon=":material/content_copy:",
            url_path="duplicates"),
]

_identity.sidebar_identity()  # the labeller's name, on every page (kept in the browser across reloads and tabs)
nav = st.navigation(PAGES, position="hidden" if ui.presentation() else "sidebar")
if ui.presentation():
    ui.hide_sidebar_css()
ui.open_current_index("simx" if nav.title == "Explore" else nav.title)
nav.run()
ui.freeze_long_lived()
