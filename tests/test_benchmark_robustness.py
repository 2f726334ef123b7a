# SPDX-License-Identifier: Apache-2.0
"""The stress suite's definition: enough cases per factor, seeds disjoint from training, protocols of its own."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bundle.data.phantom_scan import SCAN_PROTOCOLS
from scripts.benchmarks.robustness import STRESS_FACTORS, STRESS_SEED_BASE, format_robustness_table, stress_cases


def test_at_least_48_cases_and_4_per_factor():
    cases = stress_cases()
    assert len(cases) >= 48
    assert min(Counter(c.factor for c in cases).values()) >= 4
    assert len({c.name for c in cases}) == len(cases) and len({c.seed for c in cases}) == len(cases)


def test_seeds_are_disjoint_from_every_training_seed(repo_root):
    """Training datasets use ``seed * 100000 + case``; every config's dataset seed keeps below the suite's seeds."""
    for path in sorted((repo_root / "configs").rglob("*.json")):
        phantoms = json.loads(path.read_text()).get("phantoms")
        if isinstance(phantoms, dict):
            total = phantoms["num_train"] + phantoms["num_val"] + phantoms["num_test"]
            assert phantoms["seed"] * 100000 + total < STRESS_SEED_BASE, path.name
    assert min(c.seed for c in stress_cases()) >= STRESS_SEED_BASE


def test_suite_protocols_are_not_the_training_ones():
    protocols = {c.scan for c in stress_cases()}
    assert not protocols & set(SCAN_PROTOCOLS.values())


def test_factor_selection_and_unknown_factor():
    assert {c.factor for c in stress_cases(["top_cut", "bleeds"])} == {"top_cut", "bleeds"}
    with pytest.raises(ValueError, match="unknown factors"):
        stress_cases(["no_such_factor"])
    assert list(STRESS_FACTORS)[0] == "range_in_cavity"


def test_table_has_one_row_per_factor_and_the_worst_case():
    rows = [
        dict(case="a_0", factor="a", method="network", dice=0.99, hd95_mm=1.0, icv_error_pct=-1.0),
        dict(case="a_1", factor="a", method="network", dice=0.95, hd95_mm=3.0, icv_error_pct=2.0),
        dict(case="a_0", factor="a", method="pseudo_label", dice=0.9, hd95_mm=5.0, icv_error_pct=0.0),
        dict(case="b_0", factor="b", method="network", dice=0.97, hd95_mm=2.0, icv_error_pct=0.0),
    ]
    table = format_robustness_table(rows)
    assert "| a | 2 | 0.9700 | 0.9500 | 2.00 | +0.50 | 1.50 | 0.9000 | 0.9000 |" in table
    assert "| **all** | 3 | 0.9700 | 0.9500 |" in table
