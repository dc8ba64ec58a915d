"""Protocol helpers that need no data: resumable result files, slice choice, scribble conversion."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from acdc_interactive_protocol import scribble_labels, spread_slices  # noqa: E402
from protocol_common import ResultFile  # noqa: E402


def test_two_writers_fill_one_result_file(tmp_path):
    path = tmp_path / "results.json"
    first, second = ResultFile(path, ("case", "k")), ResultFile(path, ("case", "k"))
    first.add({"case": "a", "k": 1, "value": 1}, {})
    second.add({"case": "b", "k": 1, "value": 2}, {})
    first.add({"case": "a", "k": 1, "value": 3}, {})  # a rerun replaces its own row
    reread = ResultFile(path, ("case", "k"))
    assert sorted((r["case"], r["value"]) for r in reread.rows) == [("a", 3), ("b", 2)]
    assert reread.has(case="b", k=1) and not reread.has(case="b", k=2)


def test_a_row_redone_by_another_writer_is_not_reverted_by_a_stale_copy(tmp_path):
    path = tmp_path / "results.json"
    ResultFile(path, ("case", "k")).add({"case": "a", "k": 1, "value": "old"}, {})
    long_run = ResultFile(path, ("case", "k"))  # started before the redo, holds the old row
    ResultFile(path, ("case", "k")).add({"case": "a", "k": 1, "value": "redone"}, {})
    long_run.add({"case": "b", "k": 1, "value": "new"}, {})
    reread = ResultFile(path, ("case", "k"))
    assert sorted((r["case"], r["value"]) for r in reread.rows) == [("a", "redone"), ("b", "new")]


def test_painted_slices_are_spread_over_the_heart():
    truth = np.zeros((12, 4, 4), np.uint8)
    truth[2:10, 1:3, 1:3] = 1  # heart on slices 2..9
    assert spread_slices(truth, 1) == [6]
    assert spread_slices(truth, 2) == [4, 8]
    assert spread_slices(truth, 5) == [2, 4, 6, 7, 9]  # floor of 0.8, 2.4, 4.0, 5.6, 7.2
    assert all(2 <= z <= 9 for z in spread_slices(truth, 8)) and len(spread_slices(truth, 8)) == 8


def test_expert_scribbles_map_to_our_scribble_convention():
    scribbles = np.array([[[0, 1, 2, 3, 4]]], np.uint8)  # 0 background ... 4 not annotated
    assert scribble_labels(scribbles).tolist() == [[[4, 1, 2, 3, 0]]]
