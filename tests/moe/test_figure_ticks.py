"""Integer axes (experts, devices, steps, KV blocks) tick on whole numbers only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studio_ui.figures import dsa, experts


def test_expert_heatmap_and_evolution_tick_whole_numbers() -> None:
    fig = experts.heatmap(np.ones((2, 2)), [0, 1], "device")
    assert fig.layout.xaxis.tickmode == "linear" and fig.layout.xaxis.dtick == 1
    assert fig.layout.xaxis.tick0 == 0 and fig.layout.xaxis.tickformat == "d"
    wide = experts.heatmap(np.ones((3, 256)), [0, 1, 2], "expert")
    assert wide.layout.xaxis.dtick == 16  # 256 experts: at most 16 ticks, whole numbers
    ev = experts.evolution(pd.DataFrame({"step": [0, 1], "balancedness": [0.5, 0.6],
                                         "peak_to_avg": [2.0, 1.7]}))  # fmt: skip
    assert ev.layout.xaxis.dtick == 1 and ev.layout.xaxis.title.text == "step"


def test_dsa_hot_spots_tick_whole_steps_and_blocks() -> None:
    df = pd.DataFrame({"step_idx": [394, 395, 396], "block_id": [0, 3, 5], "layers": [1, 2, 3]})
    fig = dsa.hot_spot_heatmap(df, layers_in_range=4)
    assert fig.layout.xaxis.tick0 == 394 and fig.layout.xaxis.dtick == 1
    assert fig.layout.yaxis.tick0 == 0 and fig.layout.yaxis.dtick == 1


def test_counts_and_layer_colour_bar_tick_whole_numbers() -> None:
    df = pd.DataFrame({"step_idx": [394, 395, 396], "block_id": [0, 3, 5], "layers": [1, 2, 3]})
    bar = dsa.hot_spot_heatmap(df, layers_in_range=3).data[0].colorbar
    assert (bar.tickmode, bar.tick0, bar.dtick, bar.tickformat) == ("linear", 0, 1, "d")
    counts = dsa.bar([14, 16, 18], [2, 8, 3], "t", "blocks", "records")
    assert (counts.layout.yaxis.tickmode, counts.layout.yaxis.dtick) == ("linear", 1)
    # fractions or large counts keep Plotly's own ticks
    assert dsa.bar([1, 2], [0.5, 1.5], "t", "x", "y").layout.yaxis.tickmode is None
    assert dsa.bar([1, 2], [10, 400], "t", "x", "y").layout.yaxis.tickmode is None
    # the right axis of the evolution plot has its own round ticks, not the left axis's grid
    ev = experts.evolution(pd.DataFrame({"step": [0, 1], "balancedness": [0.5, 0.6],
                                         "peak_to_avg": [2.0, 1.7]}))  # fmt: skip
    assert ev.layout.yaxis2.tickmode == "auto" and ev.layout.yaxis2.showgrid is False
