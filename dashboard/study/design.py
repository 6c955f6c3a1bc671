"""The reading order of a study: which arm each reader's sessions use and in which order the cases come.

* Every reader reads every case once per arm, one session per arm.
* Arm order is counterbalanced over readers with a Latin square: a Williams square when the number
  of arms is even (each arm also follows each other arm equally often, so first-order carry-over is
  balanced), a cyclic square when it is odd. The square's arm labels and the readers' rows are
  drawn from the study seed; reader i (in the seeded reader order) takes row i mod k. When the
  number of readers is a multiple of the number of arms k, every arm sits in every session
  position equally often.
* Case order is shuffled per reader and per session from ``(seed, reader index, session)``, so it
  is reproducible from the recorded seed and independent between readers and sessions.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latin_square(k: int) -> list[list[int]]:
    """A k x k Latin square of arm indices: Williams (carry-over balanced) for even k, cyclic for odd k."""
    if k < 1:
        raise ValueError("a Latin square needs at least one arm")
    if k % 2 == 0:
        # Williams: first row 0, 1, k-1, 2, k-2, ...; row r adds r (mod k)
        first, lo, hi = [0], 1, k - 1
        while len(first) < k:
            first.append(lo)
            lo += 1
            if len(first) < k:
                first.append(hi)
                hi -= 1
        return [[(x + r) % k for x in first] for r in range(k)]
    return [[(x + r) % k for x in range(k)] for r in range(k)]


def arm_orders(readers: Sequence[str], arms: Sequence[str], seed: int) -> dict[str, list[str]]:
    """reader -> the arms of its sessions, in session order (see the module docstring)."""
    k = len(arms)
    rng = np.random.default_rng([int(seed), 0xA2])
    labels = [arms[i] for i in rng.permutation(k)]  # which arm each square symbol stands for
    rows = latin_square(k)
    row_of = rng.permutation(len(readers))  # reader i takes row row_of[i] mod k
    return {r: [labels[j] for j in rows[int(row_of[i]) % k]] for i, r in enumerate(readers)}


def case_order(case_ids: Sequence[str], seed: int, reader_index: int, session_index: int) -> list[str]:
    """The cases of one reader's session in reading order (a seeded shuffle)."""
    rng = np.random.default_rng([int(seed), 0xCA5E, int(reader_index), int(session_index)])
    return [case_ids[i] for i in rng.permutation(len(case_ids))]


def plan_assignments(study: str, readers: Sequence[str], arms: Sequence[str], case_ids: Sequence[str],
                     seed: int) -> list[dict]:
    """Every (reader, session, position) of a study: dicts with assignment_id, study, reader, arm,
    session_index, position, case_id; reader-major, then session, then position."""
    orders = arm_orders(readers, arms, seed)
    out = []
    for ri, reader in enumerate(readers):
        for si, arm in enumerate(orders[reader]):
            for pos, case_id in enumerate(case_order(list(case_ids), seed, ri, si)):
                out.append({"assignment_id": f"{study}/{reader}/{si}/{pos}", "study": study, "reader": reader,
                            "arm": arm, "session_index": si, "position": pos, "case_id": case_id})
    return out
