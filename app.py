"""simx dashboard: navigation between the pages (``streamlit run app.py``).

Pages live in ``pages/`` (one file each); this file only sets the page up and hands over to ``st.navigation``.
All maths happens in ``simx``; the pages ask it and draw. State lives in the URL (``st.query_params``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the pages import their shared helpers as ``pages._common``
    sys.path.insert(0, str(HERE))

from pages import _common as ui  # noqa: E402

ui.use_navigation()  # deep links (/failures, ...) go through this file's navigation, not pages/ scanning
st.set_page_config(page_title="simx: visual-search debugger", page_icon=":material/image_search:", layout="wide")

PAGES = [
    st.Page(str(HERE / "pages" / "explore.py"), title="Explore", icon=":material/search:", default=True),
    st.Page(str(HERE / "pages" / "review.py"), title="Review queue", icon=":material/rule:", url_path="review"),
    st.Page(str(HERE / "pages" / "failures.py"), title="Failures", icon=":material/report:", url_path="failures"),
    st.Page(str(HERE / "pages" / "embedding_map.py"), title="Embedding map", icon=":material/scatter_plot:",
            url_path="embedding_map"),
    st.Page(str(HERE / "pages" / "labels.py"), title="Labels", icon=":material/label:", url_path="labels"),
]

nav = st.navigation(PAGES, position="hidden" if ui.presentation() else "sidebar")
nav.run()
ui.freeze_long_lived()
