"""breaching's Inverting Gradients on tfleak's victims: the PyTorch side of `inversion_speed.py`.

breaching 0.1.2 (Geiping et al., github.com/JonasGeiping/breaching) is the
reference framework for gradient inversion. Here it attacks the same function
as tfleak: the victim is breaching's own model (`construct_model`: `ConvNet`,
`resnet20`, ...) with the Keras victim's weights copied in, layer for layer.
Its cases download CIFAR-10 through torchvision, which this machine cannot, so
its attacker gets the server payload and the user's shared data built by hand,
with exactly the structure its `servers.py` and `users.py` produce:

    server_payload = dict(parameters=[...], buffers=[...] or None, metadata=cfg.case.data)
    shared_data = dict(gradients=[...], buffers=None,
                       metadata=dict(num_data_points=B, labels=labels, local_hyperparams=None))

breaching works on images normalised by the CIFAR-10 mean and standard
deviation (its candidate lives in that space, boxed to the image range); the
Keras victims normalise inside the model, so the torch side is fed normalised
images and its reconstruction is mapped back to [0, 1] before scoring.

Weight copy (Keras -> torch): convolution kernels `[h, w, in, out]` ->
`[out, in, h, w]`; dense kernels `[in, out]` -> `[out, in]`; batch norm
gamma, beta, moving mean and variance -> weight, bias, running_mean,
running_var. The ConvNet flattens `[3, 3, 4w]` features: Keras in (h, w, c)
order, PyTorch in (c, h, w), so the dense kernel's rows are permuted. Installed
through the `bench` extra only.
"""

from __future__ import annotations

import copy
import logging
import re
import time

import numpy as np
import torch

# Keras layer name of each torch module of breaching's models (VisionContainer prefix "model.").
_RESNET_STEM = {"model.stem.0": "stem_conv", "model.stem.1": "stem_bn", "model.linear": "logits"}
_RESNET_BLOCK = {
    "conv1": "conv1",
    "bn1": "bn1",
    "conv2": "conv2",
    "bn2": "bn2",
    "downsample.0": "shortcut_conv",
    "downsample.1": "shortcut_bn",
}


def breaching_config(iterations: int, callback: int = 0, attack: str = "invertinggradients"):
    """breaching's `1_single_image_small` case with one of its attacks.

    Args:
      iterations: optimiser steps (`attack.optim.max_iterations`; the step
        decay milestones scale with it). For `deepleakage` each step is one
        `torch.optim.LBFGS.step`, up to 20 L-BFGS iterations.
      callback: log the objective every this many steps (0: never).
      attack: `invertinggradients`, `seethroughgradients` or `deepleakage`.
    """
    import breaching

    cfg = breaching.get_config(overrides=["case=1_single_image_small", f"attack={attack}"])
    cfg.attack.optim.max_iterations = int(iterations)
    cfg.attack.optim.callback = int(callback) if callback else int(iterations) + 1
    return cfg


def breaching_model(name: str, cfg, num_classes: int = 10):
    """breaching's own CIFAR model for a tfleak victim name, untrained (weights are copied in)."""
    from breaching.cases.models.model_preparation import construct_model

    breaching_name = {"convnet": "ConvNet", "lenet": "lenet_zhu"}.get(name, name)
    cfg.case.data.classes = int(num_classes)
    model, loss = construct_model(breaching_name, cfg.case.data, pretrained=False)
    return model, loss


def _keras_module_name(torch_name: str, keras_model=None) -> str:
    if torch_name in _RESNET_STEM:
        return _RESNET_STEM[torch_name]
    parts = torch_name.split(".")
    if parts[:2] == ["model", "body"]:  # LeNetZhu: model.body.0/2/4 -> conv0/1/2
        return f"conv{int(parts[2]) // 2}"
    if parts[:2] == ["model", "fc"]:  # LeNetZhu's classifier: the last Dense layer
        return keras_model.layers[-1].name
    if parts[:2] == ["model", "model"]:  # ConvNet: model.model.conv0 -> conv0
        return parts[2]
    if parts[:2] == ["model", "layers"]:  # model.layers.1.0.conv1 -> stage2_block1_conv1
        stage, block, rest = int(parts[2]) + 1, int(parts[3]) + 1, ".".join(parts[4:])
        return f"stage{stage}_block{block}_{_RESNET_BLOCK[rest]}"
    raise KeyError(f"no Keras layer known for breaching module {torch_name!r}")


def copy_weights(keras_model, torch_model) -> int:
    """Copies every weight and batch-norm statistic of a tfleak CIFAR victim into breaching's model.

    Returns:
      The number of torch tensors set (every parameter and running statistic).

    Raises:
      ValueError: if a Keras layer is left unused or a shape does not fit.
    """
    used, count = set(), 0
    with torch.no_grad():
        for module_name, module in torch_model.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                layer = keras_model.get_layer(_keras_module_name(module_name, keras_model))
                module.weight.copy_(torch.from_numpy(layer.kernel.numpy().transpose(3, 2, 0, 1)))
                count += 1
                if module.bias is not None:
                    module.bias.copy_(torch.from_numpy(layer.bias.numpy()))
                    count += 1
            elif isinstance(module, torch.nn.BatchNorm2d):
                layer = keras_model.get_layer(_keras_module_name(module_name, keras_model))
                for target, source in (
                    (module.weight, layer.gamma),
                    (module.bias, layer.beta),
                    (module.running_mean, layer.moving_mean),
                    (module.running_var, layer.moving_variance),
                ):
                    target.copy_(torch.from_numpy(source.numpy()))
                    count += 1
            elif isinstance(module, torch.nn.Linear):
                layer = keras_model.get_layer(_keras_module_name(module_name, keras_model))
                kernel = layer.kernel.numpy()
                flatten = [x for x in keras_model.layers if type(x).__name__ == "Flatten"]
                if flatten and int(np.prod(flatten[0].input.shape[1:])) == kernel.shape[0]:
                    # Keras flattened [h, w, c]; torch flattens [c, h, w].
                    h, w, c = flatten[0].input.shape[1:]
                    kernel = (
                        kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
                    )
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
                module.bias.copy_(torch.from_numpy(layer.bias.numpy()))
                count += 2
            else:
                continue
            used.add(layer.name)
    weighted = {layer.name for layer in keras_model.layers if layer.weights} - {"normalization"}
    if weighted - used:
        raise ValueError(f"Keras layers without a torch counterpart: {sorted(weighted - used)}")
    return count


def normalise(images: np.ndarray, cfg) -> torch.Tensor:
    """`[batch, 32, 32, 3]` images in [0, 1] -> breaching's normalised `[batch, 3, 32, 32]`."""
    mean = np.asarray(cfg.case.data.mean, np.float32)[None, :, None, None]
    std = np.asarray(cfg.case.data.std, np.float32)[None, :, None, None]
    normalised = (images.transpose(0, 3, 1, 2) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised)).float()


def denormalise(tensor: torch.Tensor, cfg) -> np.ndarray:
    """breaching's normalised `[batch, 3, 32, 32]` -> `[batch, 32, 32, 3]` float32 in [0, 1]."""
    mean = np.asarray(cfg.case.data.mean, np.float32)[None, :, None, None]
    std = np.asarray(cfg.case.data.std, np.float32)[None, :, None, None]
    images = tensor.detach().cpu().numpy() * std + mean
    return np.clip(images, 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)


def logit_difference(keras_model, torch_model, images: np.ndarray, cfg) -> dict:
    """Max absolute logit difference between the Keras victim and its torch copy.

    Inference mode (moving statistics) and training mode (batch statistics;
    both models' moving statistics are restored afterwards: a Keras call in
    training mode updates them).
    """
    inputs = normalise(images, cfg)
    weights = keras_model.get_weights()
    result = {}
    try:
        for mode, training in (("eval", False), ("train", True)):
            model = copy.deepcopy(torch_model).train(training)
            with torch.no_grad():
                theirs = model(inputs).numpy()
            ours = keras_model(images, training=training).numpy()
            result[mode] = float(np.max(np.abs(ours - theirs)))
    finally:
        keras_model.set_weights(weights)
    return result


def user_gradient(torch_model, images: np.ndarray, labels: np.ndarray, cfg, batch_norm: str):
    """The gradient a breaching user shares (mean cross entropy over the batch)."""
    model = copy.deepcopy(torch_model).train(batch_norm == "train")
    loss = torch.nn.CrossEntropyLoss()(
        model(normalise(images, cfg)), torch.from_numpy(labels.astype(np.int64))
    )
    return [g.detach() for g in torch.autograd.grad(loss, model.parameters())]


def user_local_updates(torch_model, images, labels, cfg, batch_norm: str, steps, lr, per_step):
    """What breaching's `local_updates` user (`UserMultiStep`) shares, and its step labels.

    `steps` SGD steps at learning rate `lr`, step k on examples
    `[k * per_step, (k + 1) * per_step)` (modulo the batch), then the weight
    difference `W_K - W_0`, exactly as `breaching.cases.users.UserMultiStep`.
    """
    model = copy.deepcopy(torch_model).train(batch_norm == "train")
    server = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    data, targets = normalise(images, cfg), torch.from_numpy(labels.astype(np.int64))
    seen, step_labels = 0, []
    for _ in range(steps):
        x, y = data[seen : seen + per_step], targets[seen : seen + per_step]
        seen = (seen + per_step) % len(labels)
        step_labels.append(y.sort()[0])
        optimizer.zero_grad()
        torch.nn.CrossEntropyLoss()(model(x), y).backward()
        optimizer.step()
    update = [(p - s).detach().clone() for p, s in zip(model.parameters(), server)]
    return update, step_labels


def reconstruct(
    torch_model,
    loss_fn,
    cfg,
    images: np.ndarray,
    labels: np.ndarray,
    batch_norm: str = "eval",
    seed: int = 0,
    verbose: bool = False,
    labels_known: bool = True,
    local_updates: dict | None = None,
) -> dict:
    """Runs one of breaching's optimisation attacks on a hand-built payload.

    Args:
      torch_model: breaching's model with the victim's weights.
      loss_fn: its loss (`torch.nn.CrossEntropyLoss`).
      cfg: `breaching_config(...)`.
      images: `[batch, 32, 32, 3]` float32 in [0, 1], the user's private batch.
      labels: `[batch]` int class indices.
      batch_norm: 'eval': the server sends public buffers (breaching's default;
        user and attacker use the moving statistics); 'train': no buffers
        (both use the batch's statistics).
      seed: `torch.manual_seed` for the attacker's random start.
      verbose: show breaching's log lines.
      labels_known: give the attacker the labels (sorted, as breaching's users
        do); False: breaching restores them by its `attack.label_strategy`.
      local_updates: None (the user shares one gradient) or
        `dict(steps=K, lr=..., data_per_step=B)`: breaching's `local_updates`
        user, whose hyperparameters and per-step labels the server is given.

    Returns:
      dict with `reconstruction` (`[batch, 32, 32, 3]` float32 in [0, 1]),
      `labels` (the attacker's labels, int64 `[batch]`), `seconds` (the whole
      `reconstruct` call), `final_objective`, `gradient` (what the user
      shared, torch layout), `progress` (`(iteration, seconds)` at each of
      breaching's log lines, every `attack.optim.callback` steps).
    """
    import breaching

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("breaching").setLevel(logging.INFO)
    setup = dict(device=torch.device("cpu"), dtype=torch.float)
    hyperparams = None
    if local_updates is None:
        gradient = user_gradient(torch_model, images, labels, cfg, batch_norm)
    else:
        gradient, step_labels = user_local_updates(
            torch_model,
            images,
            labels,
            cfg,
            batch_norm,
            local_updates["steps"],
            local_updates["lr"],
            local_updates["data_per_step"],
        )
        hyperparams = dict(
            lr=local_updates["lr"],
            steps=local_updates["steps"],
            data_per_step=local_updates["data_per_step"],
            labels=step_labels,
        )
    server_payload = dict(
        parameters=[p.detach().clone() for p in torch_model.parameters()],
        buffers=[b.clone() for b in torch_model.buffers()] if batch_norm == "eval" else None,
        metadata=cfg.case.data,
    )
    if not labels_known:
        given = None
    elif local_updates is None:
        given = torch.from_numpy(np.sort(labels).astype(np.int64))
    else:  # the multi-step objective pairs candidate k with step k's labels: keep the order
        given = torch.from_numpy(labels.astype(np.int64))
    shared_data = dict(
        gradients=gradient,
        buffers=None,
        metadata=dict(
            num_data_points=int(len(labels)), labels=given, local_hyperparams=hyperparams
        ),
    )
    attacker = breaching.attacks.prepare_attack(torch_model, loss_fn, cfg.attack, setup)
    progress = _Progress()
    logger = logging.getLogger("breaching.attacks.optimization_based_attack")
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    torch.manual_seed(int(seed))
    start = time.perf_counter()
    progress.start = start
    try:
        reconstructed, stats = attacker.reconstruct(
            [server_payload], [shared_data], {}, dryrun=False
        )
    finally:
        logger.removeHandler(progress)
    seconds = time.perf_counter() - start
    values = stats.get("Trial_0_Val", [])
    found = reconstructed.get("labels")
    return {
        "reconstruction": denormalise(reconstructed["data"], cfg),
        "labels": None if found is None else found.detach().cpu().numpy().astype(np.int64),
        "seconds": seconds,
        "final_objective": float(values[-1]) if values else None,
        "gradient": gradient,
        "progress": progress.points,
        "attacker": repr(attacker),
    }


class _Progress(logging.Handler):
    """Seconds since the start at each of breaching's "| It: N |" log lines."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.start, self.points = None, []

    def emit(self, record):
        match = re.search(r"\| It: (\d+) \|", record.getMessage())
        if match and self.start is not None:
            self.points.append((int(match.group(1)), time.perf_counter() - self.start))
