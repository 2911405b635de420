"""The published DLG loop in PyTorch, the reference `dlg_speed.py` measures against.

Follows the DLG authors' `main.py` (github.com/mit-han-lab/dlg): LeNet with
sigmoid, dummy data and label from `torch.randn`, `torch.optim.LBFGS` with its
defaults (lr 1, 20 iterations a step, history 100, no line search), 300 steps,
the gradient distance backpropagated through `create_graph=True` gradients.
The victim's weights are copied from tfleak's Keras LeNet, so both sides attack
the same function. Installed through the `bench` extra only.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TorchLeNet(nn.Module):
    """The DLG reference LeNet (three 5x5 convs, padding 2, strides 2, 2, 1)."""

    def __init__(self, channels: int, features: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        out = self.body(x)
        return self.fc(out.reshape(out.size(0), -1))


def from_keras(victim) -> TorchLeNet:
    """Copies a `tfleak.models.LeNet`'s weights into a `TorchLeNet`."""
    height, width, channels = victim.image_shape
    import keras

    convs = [layer for layer in victim.model.layers if isinstance(layer, keras.layers.Conv2D)]
    side = victim.classifier.kernel.shape[0] // 12
    net = TorchLeNet(channels, victim.classifier.kernel.shape[0], victim.num_classes)
    torch_convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for keras_conv, torch_conv in zip(convs, torch_convs):
            # Keras [h, w, in, out] -> torch [out, in, h, w].
            torch_conv.weight.copy_(
                torch.from_numpy(keras_conv.kernel.numpy().transpose(3, 2, 0, 1))
            )
            torch_conv.bias.copy_(torch.from_numpy(keras_conv.bias.numpy()))
        # Keras flattens [h, w, c], torch [c, h, w]: reorder the kernel's rows.
        hw = int(round(side**0.5))
        kernel = victim.classifier.kernel.numpy().reshape(hw, hw, 12, -1).transpose(2, 0, 1, 3)
        net.fc.weight.copy_(torch.from_numpy(kernel.reshape(-1, kernel.shape[-1]).T.copy()))
        net.fc.bias.copy_(torch.from_numpy(victim.classifier.bias.numpy()))
    return net


def cross_entropy_for_onehot(pred, target):
    return torch.mean(torch.sum(-target * F.log_softmax(pred, dim=-1), 1))


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    mse = float(np.mean((reference - np.clip(image, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def run(net, image: np.ndarray, label: int, seed: int, steps=300, budget_seconds=None, target=30.0):
    """Runs the published loop on one image `[h, w, c]` in [0, 1].

    Returns a dict: `seconds_to_target` (None if never reached), `seconds`,
    `steps`, `evaluations`, `psnr` (final), `label_pred`.
    """
    torch.manual_seed(seed)
    gt_data = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
    gt_onehot = F.one_hot(torch.tensor([label]), net.fc.out_features).float()
    loss = cross_entropy_for_onehot(net(gt_data), gt_onehot)
    original = [g.detach().clone() for g in torch.autograd.grad(loss, net.parameters())]

    dummy_data = torch.randn(gt_data.size()).requires_grad_(True)
    dummy_label = torch.randn(gt_onehot.size()).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label])
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        dummy_loss = cross_entropy_for_onehot(net(dummy_data), F.softmax(dummy_label, dim=-1))
        dummy_grad = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
        grad_diff = sum(((gx - gy) ** 2).sum() for gx, gy in zip(dummy_grad, original))
        grad_diff.backward()
        return grad_diff

    start = time.perf_counter()
    reached = None
    steps_done = 0
    while steps_done < steps:
        optimizer.step(closure)
        steps_done += 1
        current = dummy_data.detach().numpy()[0].transpose(1, 2, 0)
        if reached is None and psnr(image, current) >= target:
            reached = time.perf_counter() - start
            break
        if budget_seconds is not None and time.perf_counter() - start > budget_seconds:
            break
    seconds = time.perf_counter() - start
    final = dummy_data.detach().numpy()[0].transpose(1, 2, 0)
    return {
        "seconds_to_target": reached,
        "seconds": seconds,
        "steps": steps_done,
        "evaluations": evaluations,
        "psnr": psnr(image, final),
        "label_pred": int(dummy_label.argmax()),
    }
