"""Figure builders (Plotly / PyVista): pure functions from analysis results to figures."""
