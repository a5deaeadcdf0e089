"""Screening selection (manifest ``screen``): which pairs keep the certified measures."""

from __future__ import annotations

import math

import pytest

from otaudit.audit.screen import screened_pairs
from otaudit.errors import InputError

PAIRS = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]


def _row(a, b, value, *, measure="sliced", status="ok"):
    return {"dataset_a": a, "dataset_b": b, "measure": measure, "value": value, "status": status}


def _rows(values):
    return [_row(a, b, v) for (a, b), v in zip(PAIRS, values, strict=True)]


def test_nearest_and_farthest_best_first():
    rows = _rows([5.0, 1.0, 3.0, 0.5, 4.0, 2.0])
    assert screened_pairs(rows, PAIRS, 2) == [("b", "c"), ("a", "c")]
    assert screened_pairs(rows, PAIRS, 3, "farthest") == [("a", "b"), ("b", "d"), ("a", "d")]


def test_ties_are_broken_by_pair_order():
    rows = _rows([2.0, 1.0, 1.0, 1.0, 2.0, 0.0])
    rows.reverse()  # row order must not matter, only the order of `pairs`
    assert screened_pairs(rows, PAIRS, 3) == [("c", "d"), ("a", "c"), ("a", "d")]
    assert screened_pairs(rows, PAIRS, 2, "farthest") == [("a", "b"), ("b", "d")]


def test_failed_and_other_measures_are_never_kept():
    rows = _rows([5.0, 1.0, 3.0, 0.5, 4.0, 2.0])
    rows[3] = _row("b", "c", None, status="failed")  # the best one failed
    rows[1] = _row("a", "c", math.nan)  # not rankable
    rows.append(_row("a", "b", 0.0, measure="otdd"))  # not the screening measure
    assert screened_pairs(rows, PAIRS, 2) == [("c", "d"), ("a", "d")]
    assert screened_pairs(rows, PAIRS, 1, "farthest") == [("a", "b")]


def test_keep_larger_than_the_candidates_keeps_them_all():
    rows = _rows([5.0, 1.0, 3.0, 0.5, 4.0, 2.0])[:4]
    assert screened_pairs(rows, PAIRS, 100) == [("b", "c"), ("a", "c"), ("a", "d"), ("a", "b")]
    assert screened_pairs([], PAIRS, 3) == []


def test_bad_arguments_are_one_line_input_errors():
    with pytest.raises(InputError, match="field 'screen.keep'.*; fix: "):
        screened_pairs([], PAIRS, 0)
    with pytest.raises(InputError, match="field 'screen.order'.*; fix: "):
        screened_pairs([], PAIRS, 1, "closest")
