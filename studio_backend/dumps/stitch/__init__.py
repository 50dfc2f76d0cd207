"""Tensor-parallel stitching: rules per module class (name fallback, overrides) and the stitcher."""
