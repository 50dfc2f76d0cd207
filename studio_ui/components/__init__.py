"""Custom Streamlit components of the studio (plain HTML + JS, no build step)."""
