"""Streamlit entry point: navigation only (`streamlit run run_studio.py`)."""

from studio_backend.gl_compat import load_triton_before_gl

load_triton_before_gl()  # before any page renders with VTK (see studio_backend/gl_compat.py)

import streamlit as st  # noqa: E402

from studio_ui import theme  # noqa: E402,F401 - sets the Plotly template
from studio_ui.navigation import available_pages  # noqa: E402
from studio_ui.services_compare import warm_metrics  # noqa: E402

st.set_page_config(page_title="Inspection Studio", page_icon=":material/biotech:", layout="wide")
pages = [
    st.Page(p.file, title=p.title, icon=p.icon, url_path=p.url, default=(p.url == "home"))
    for p in available_pages()
]
warm_metrics()  # the Compare kernel, in the background (studio_ui/services_compare.py)
st.navigation(pages).run()
