"""Randomisation: counterbalanced arm order, every case once per arm, reproducible from the seed."""
from __future__ import annotations

from collections import Counter

import pytest

from dashboard.study import arm_orders, latin_square, plan_assignments


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_latin_square_rows_and_columns_are_permutations(k):
    sq = latin_square(k)
    assert all(sorted(row) == list(range(k)) for row in sq)
    assert all(sorted(col) == list(range(k)) for col in zip(*sq))


def test_even_squares_are_williams_balanced_for_carry_over():
    sq = latin_square(4)
    pairs = Counter((row[i], row[i + 1]) for row in sq for i in range(3))
    assert set(pairs.values()) == {1} and len(pairs) == 12  # each ordered pair once


@pytest.mark.parametrize("n_readers, arms", [(4, ["a", "b"]), (6, ["a", "b", "c"]), (8, ["a", "b", "c", "d"])])
def test_each_arm_sits_in_each_session_position_equally_often(n_readers, arms):
    readers = [f"r{i}" for i in range(n_readers)]
    orders = arm_orders(readers, arms, seed=3)
    for pos in range(len(arms)):
        counts = Counter(orders[r][pos] for r in readers)
        assert set(counts) == set(arms) and set(counts.values()) == {n_readers // len(arms)}


def test_every_reader_reads_every_case_once_per_arm_in_one_session_per_arm():
    readers, arms, cases = ["a", "b", "c"], ["x", "y"], [f"c{i}" for i in range(7)]
    plan = plan_assignments("s", readers, arms, cases, seed=9)
    assert len(plan) == len(readers) * len(arms) * len(cases)
    per = Counter((p["reader"], p["arm"], p["case_id"]) for p in plan)
    assert set(per.values()) == {1} and len(per) == 42
    for r in readers:
        sessions = {p["session_index"]: p["arm"] for p in plan if p["reader"] == r}
        assert sorted(sessions.values()) == arms  # one session per arm
        for si in sessions:
            pos = sorted(p["position"] for p in plan if p["reader"] == r and p["session_index"] == si)
            assert pos == list(range(len(cases)))


def test_same_seed_same_order_other_seed_other_order():
    readers, arms, cases = ["a", "b", "c", "d"], ["x", "y"], [f"c{i}" for i in range(12)]
    one = plan_assignments("s", readers, arms, cases, seed=1)
    assert one == plan_assignments("s", readers, arms, cases, seed=1)
    other = plan_assignments("s", readers, arms, cases, seed=2)
    assert [p["case_id"] for p in one] != [p["case_id"] for p in other]
    # case order differs between readers and between sessions of one reader
    order = {(p["reader"], p["session_index"]): [] for p in one}
    for p in one:
        order[(p["reader"], p["session_index"])].append(p["case_id"])
    assert order[("a", 0)] != order[("b", 0)] and order[("a", 0)] != order[("a", 1)]
