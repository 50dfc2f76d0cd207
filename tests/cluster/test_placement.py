"""Which node reads which rank folder (pure: no cluster needed)."""

from __future__ import annotations

from studio_backend.dumps.cluster.runtime import Node, assign_folders


def test_a_folder_only_one_node_sees_goes_there() -> None:
    nodes = [Node("a", "10.0.0.1"), Node("b", "10.0.0.2")]
    seen = {"a": ["r0", "r1"], "b": ["r2", "r3"]}
    assert assign_folders(seen, nodes) == {"r0": "a", "r1": "a", "r2": "b", "r3": "b"}


def test_a_shared_file_system_is_split_evenly_and_pins_win() -> None:
    nodes = [Node("a", "h"), Node("b", "h"), Node("c", "h", frozenset({"r3"}))]
    every = ["r0", "r1", "r2", "r3"]
    got = assign_folders({"a": every, "b": every, "c": every}, nodes)
    # r3 is pinned to c; c pins folders, so it takes no unpinned one; a and b share the rest
    assert got == {"r3": "c", "r0": "a", "r1": "b", "r2": "a"}
