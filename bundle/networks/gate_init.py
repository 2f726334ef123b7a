# SPDX-License-Identifier: Apache-2.0
"""Start stage 2 from stage 1's segmentation: the LSTM gates derived from the stage-1 U-Net's class logits."""

from __future__ import annotations

import torch

from bundle.networks.unet_convlstm import UNetConvLSTM

__all__ = ["init_gates_from_slice_logits"]


@torch.no_grad()
def init_gates_from_slice_logits(
    network: UNetConvLSTM,
    weight: torch.Tensor,
    bias: torch.Tensor,
    gate_bias: float = 3.0,
    forget_bias: float = -2.0,
    candidate_scale: float = 0.5,
    head_logit: float = 6.0,
    noise_scale: float = 0.1,
) -> None:
    """Set the U-Net's gate layer, the cells and the heads so that the network reproduces a 2D classifier's output.

    The paper initialises stage 2's U-Net from stage 1 but its last layer, the one that maps to the LSTM gates, and
    the LSTM and head start at random: the network's first segmentation is noise, and stage 2 must relearn in the
    recurrence what stage 1 already knew. Measured on the main job (2 CPU cores, 50 stage-2 iterations after 1500
    stage-1 ones) that left the test Dice at 0.92 although stage 1 alone reached 0.97. Here every cell starts as a
    pass-through of the stage-1 logit difference ``d = logit_1 - logit_0`` of its own slice: input and output gates
    open (``gate_bias``), forget gate mostly closed (``forget_bias``), candidate ``tanh(candidate_scale * d)``, and
    each head maps the hidden states back to logits ``+-head_logit`` at full confidence, so that the decision
    boundary is stage 1's (``d = 0``). Stage 2 then learns from that start how much context to carry between slices
    (the forget gate's gradients) instead of from noise. The random initial weights are kept, scaled by
    ``noise_scale``, so that the hidden units are not identical (identical units would get identical gradients).

    Only two classes (background, foreground) are supported, the bundle's case.

    Args:
        network: the stage-2 :class:`~bundle.networks.UNetConvLSTM`, its U-Net body already loaded from stage 1.
        weight: stage 1's output convolution weight ``(2, features, 1, 1)``.
        bias: stage 1's output convolution bias ``(2,)``.
        gate_bias: pre-activation of the input and output gates (sigmoid(3) = 0.95). Defaults to 3.0.
        forget_bias: pre-activation of the forget gate, the cell's own bias included (sigmoid(-2) = 0.12).
            Defaults to -2.0.
        candidate_scale: factor from the logit difference to the candidate's pre-activation. Defaults to 0.5.
        head_logit: logit difference the heads give to a fully confident pass-through. Defaults to 6.0.
        noise_scale: factor on the random initial weights kept beside the pass-through. Defaults to 0.1.

    Raises:
        ValueError: when the network or the stage-1 layer does not have two classes, or their widths differ.

    Example::

        >>> net = UNetConvLSTM(features=8, hidden_channels=4, checkpoint=False)
        >>> stage1 = UNet2D(1, 2, features=8)
        >>> init_gates_from_slice_logits(net, stage1.output.weight, stage1.output.bias)
    """
    output = network.unet.output
    if network.out_channels != 2 or weight.shape[0] != 2 or bias.shape != (2,):
        raise ValueError(f"the pass-through initialisation needs two classes, got {tuple(weight.shape)} weights.")
    if weight.shape[1:] != output.weight.shape[1:]:
        raise ValueError(
            f"stage-1 output layer {tuple(weight.shape)} does not fit the stage-2 gate layer "
            f"{tuple(output.weight.shape)}."
        )
    hidden = network.hidden_channels
    num_directions = len(network.directions)
    difference_weight = (weight[1] - weight[0]).to(output.weight)
    difference_bias = (bias[1] - bias[0]).to(output.bias)
    output.weight.mul_(noise_scale)
    output.bias.zero_()
    # the fully open pass-through: h = sigmoid(gate_bias) * tanh(sigmoid(gate_bias) * 1) per unit
    open_fraction = torch.sigmoid(torch.tensor(gate_bias)).item()
    full_state = open_fraction * torch.tanh(torch.tensor(open_fraction)).item()
    head_weight = head_logit / (2.0 * hidden * num_directions * full_state)
    for d, direction in enumerate(network.directions):
        cell_bias = direction.cell.hidden_conv.bias
        direction.cell.hidden_conv.weight.mul_(noise_scale)
        start = 4 * hidden * d
        input_gate, forget_gate, output_gate, candidate = (
            slice(start + k * hidden, start + (k + 1) * hidden) for k in range(4)
        )
        output.bias[input_gate] = gate_bias - cell_bias[:hidden]
        output.bias[forget_gate] = forget_bias - cell_bias[hidden : 2 * hidden]
        output.bias[output_gate] = gate_bias - cell_bias[2 * hidden : 3 * hidden]
        output.weight[candidate] += candidate_scale * difference_weight
        output.bias[candidate] = candidate_scale * difference_bias - cell_bias[3 * hidden :]
        head = direction.head
        head.weight.mul_(noise_scale)
        head.weight[1] += head_weight
        head.weight[0] -= head_weight
        if head.bias is not None:
            head.bias.zero_()
