# SPDX-License-Identifier: Apache-2.0
"""Benchmarks run by ``scripts/benchmark.py`` that live outside the bundle (they need extra packages)."""
