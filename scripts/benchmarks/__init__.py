# SPDX-License-Identifier: Apache-2.0
"""Benchmarks behind scripts/benchmark.py; each prints a table against a baseline measured in the same run."""
