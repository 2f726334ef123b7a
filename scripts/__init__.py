# SPDX-License-Identifier: Apache-2.0
"""Developer tooling kept out of the runtime ``bundle`` package: benchmarks and the model-zoo export checks.

The files beside this one are command-line tools run from the repository root (``python scripts/<tool>.py``).
:mod:`scripts.benchmarks` and :mod:`scripts.zoo` are importable (the repository root on ``sys.path``) and are not
shipped in the model-zoo export.
"""
