"""Streamlit entry point: navigation only (`streamlit run run_studio.py`)."""

import streamlit as st

from studio import theme  # noqa: F401 - sets the Plotly template
from studio.navigation import available_pages

st.set_page_config(page_title="Inspection Studio", page_icon=":material/biotech:", layout="wide")
pages = [
    st.Page(p.file, title=p.title, icon=p.icon, url_path=p.url, default=(p.url == "home"))
    for p in available_pages()
]
st.navigation(pages).run()
