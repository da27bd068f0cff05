"""Video-robustness dashboard — entry point: ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(page_title="Video robustness", page_icon="🎞️", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/flow.py", title="Optical flow", icon="🌊"),
    st.Page("pages/msr.py", title="Safe radius (bounds)", icon="🛡️"),
    st.Page("pages/attacks.py", title="Attack explorer", icon="⚔️"),
    st.Page("pages/ssim_vs_lp.py", title="SSIM vs Lp", icon="📐"),
]

nav = st.navigation(PAGES)
nav.run()  # every page renders the shared sidebar (pages.common.sidebar) itself
