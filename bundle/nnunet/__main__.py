# SPDX-License-Identifier: Apache-2.0
"""Command line of the nnU-Net plugin.

Usage (from the repository root, with nnunetv2 installed)::

    python -m bundle.nnunet plans $nnUNet_preprocessed/Dataset501_Phantoms      # add 3d_clstm (nnUNetPlansCLSTM)
    python -m bundle.nnunet convert $nnUNet_results/Dataset501_Phantoms/nnUNetTrainerCLSTM__nnUNetPlansCLSTM__3d_clstm
"""

from __future__ import annotations


def main() -> None:
    import fire

    from bundle.nnunet.convert import convert_to_bundle
    from bundle.nnunet.plans import add_clstm_configuration

    fire.Fire({"plans": add_clstm_configuration, "convert": convert_to_bundle}, serialize=str)


if __name__ == "__main__":
    main()
