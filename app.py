"""Video-robustness dashboard — entry point: ``streamlit run app.py``.

The common frame lives here: page config, navigation and the shared sidebar (model + clip),
rendered by ``pages.common.current()`` at the top of each page.
"""

import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="Video robustness", page_icon=":material/movie:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/flow.py", title="Optical flow", icon=":material/waves:"),
    st.Page("pages/msr.py", title="Safe radius (bounds)", icon=":material/shield:"),
    st.Page("pages/attacks.py", title="Attack explorer", icon=":material/bolt:"),
    st.Page("pages/ssim_vs_lp.py", title="SSIM vs Lp", icon=":material/compare:"),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
]

nav = st.navigation(PAGES)
sidebar()  # the common frame, rendered once here; pages read the selection with pages.common.current()
st.session_state["_sidebar_drawn"] = True
nav.run()
