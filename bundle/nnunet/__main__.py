# SPDX-License-Identifier: Apache-2.0
"""Command line of the nnU-Net plugin.

Usage (from the repository root, with nnunetv2 installed)::

    python -m bundle.nnunet raw data/phantoms_small/datalist.json $nnUNet_raw --dataset_id 501   # nnU-Net raw format
    python -m bundle.nnunet plans $nnUNet_preprocessed/Dataset501_Phantoms      # add 3d_clstm (nnUNetPlansCLSTM)
    python -m bundle.nnunet convert $nnUNet_results/Dataset501_Phantoms/nnUNetTrainerCLSTM__nnUNetPlansCLSTM__3d_clstm
"""

from __future__ import annotations


def main() -> None:
    import fire

    from bundle.nnunet.convert import convert_to_bundle
    from bundle.nnunet.dataset import datalist_to_nnunet
    from bundle.nnunet.plans import add_clstm_configuration

    fire.Fire(
        {"raw": datalist_to_nnunet, "plans": add_clstm_configuration, "convert": convert_to_bundle}, serialize=str
    )


if __name__ == "__main__":
    main()
