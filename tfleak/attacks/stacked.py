"""Many attacks' gradient matching as one batched graph: a weight copy per attack.

`attack_many` evaluates the rows of one dummy tensor `[rows, batch, h, w, c]`
(attacks x starts), each against its own observed gradient. Each row needs
its own gradient of the victim's loss with respect to the weights. Computed
by `tf.vectorized_map`, each row's convolution weight gradient
(`Conv2DBackpropFilter`) becomes one iteration of a `while_loop`, so the rows
run one after another; side by side, every row is its own copy of the graph.

Here every row differentiates its own copy of the victim's weights instead
(the copies are equal: `tf.broadcast_to` of the weights to `[rows, ...]`), and
the network is evaluated with a leading row axis. A Dense layer is one batched
matmul with the kernels `[rows, in, out]`; batch norm takes every row's own
statistics. A convolution is one grouped convolution (`tf.nn.conv2d`, one group
per row) of the rows' images laid side by side in the channels
`[batch, h, w, rows * channels]` with the kernels `[k, k, channels, rows * filters]`;
from `SPLIT_FROM_CHANNELS` input channels on, an ordinary convolution of all
rows' images with one copy, whose per-row kernel gradient alone is that grouped
convolution (`_split_convolution`). The per-row weight gradients then come out
of one ordinary backward pass (no `vectorized_map`, no loop), and so does the
gradient of the gradient distance with respect to every row's dummy data. The
result is the same objective as `GradientMatching(stacked=True)`
(`tests/test_stacked.py` checks 32 rows against one at a time to float32
rounding); only the order of float operations differs.

On this project's 2-core CPU, 32 rows of DLG's LeNet cost about 0.5 ms per row
for the objective's value and gradient, against 1.5 to 2.5 ms for one row alone,
and image patches with a batched matmul (`tf.image.extract_patches`, or strided
slices) were slower than the grouped convolution (0.7 and 2 ms per row).

`grouped_layout_reason(victim, update)` says why a victim cannot be evaluated
so (None when it can): a subclassed model, a layer kind not listed in
`PER_EXAMPLE_LAYERS` or with weights other than Conv2D, Dense and batch norm,
a dilated or grouped convolution, or an update other than `FedSGD`.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfleak.attacks.objectives import GradientMatching
from tfleak.models.loss import soft_cross_entropy
from tfleak.threats.federated import FedSGD

__all__ = [
    "ATTACK_LAYOUTS",
    "PER_EXAMPLE_LAYERS",
    "GroupedGradientMatching",
    "attacks_objective",
    "grouped_layout_reason",
    "native_grouped_convolutions",
]

# How attack_many lays out its attacks: 'auto' (grouped where the victim allows,
# otherwise per_attack), 'grouped' (weight copies, this module), 'per_attack'
# (each row's gradient on its own: side by side, or `vectorize=True`).
ATTACK_LAYOUTS = ("auto", "grouped", "per_attack")

# Layers without weights that act on every channel alike: evaluated on the
# channels layout `[batch, h, w, rows * channels]` as they are.
CHANNELWISE_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Dropout,
)

# Layers without trainable weights that act on each example on its own (the
# channel-wise ones and these): they are called on the rows folded into the
# batch axis.
PER_EXAMPLE_LAYERS = CHANNELWISE_LAYERS + (
    keras.layers.Activation,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.Normalization,
)


# A convolution of this many input channels or more is evaluated split
# (`_split_convolution`), narrower ones grouped (`_convolution`): on a 2-core
# CPU, 32 rows, the grouped form was about 13 % faster on DLG's LeNet (3 and
# 12 channels) and the split one about 13 % faster on ResNet-20 (16 to 64).
SPLIT_FROM_CHANNELS = 16


class _Value:
    """A tensor of `rows` rows in one of two layouts.

    'rows': `[rows, batch, ...]`. 'channels' (images only): `[batch, h, w,
    rows * channels]`, row r's channels at `[r * channels, (r + 1) * channels)`,
    the layout of a grouped convolution with one group per row.
    """

    def __init__(self, tensor, layout, rows):
        self.tensor, self.layout, self.rows = tensor, layout, rows

    def as_rows(self) -> tf.Tensor:
        if self.layout == "rows":
            return self.tensor
        x = self.tensor
        x = tf.reshape(x, [*x.shape[:-1], self.rows, x.shape[-1] // self.rows])
        rank = len(x.shape)
        return tf.transpose(x, [rank - 2, *range(rank - 2), rank - 1])

    def as_channels(self) -> tf.Tensor:
        if self.layout == "channels":
            return self.tensor
        x = self.tensor
        rank = len(x.shape)
        x = tf.transpose(x, [*range(1, rank - 1), 0, rank - 1])
        return tf.reshape(x, [*x.shape[:-2], -1])

    def get(self, layout) -> tf.Tensor:
        return self.as_rows() if layout == "rows" else self.as_channels()


def _flat(weight: tf.Tensor) -> tf.Tensor:
    """Per-row weights `[rows, ..., n]` -> `[..., rows * n]` (the channels layout)."""
    rank = len(weight.shape)
    moved = tf.transpose(weight, [*range(1, rank - 1), 0, rank - 1])
    return tf.reshape(moved, [*moved.shape[:-2], -1])


def _is_elementwise(activation) -> bool:
    return getattr(activation, "__name__", "") not in ("softmax", "log_softmax")


@functools.cache
def native_grouped_convolutions() -> bool:
    """Whether the default device differentiates grouped convolutions.

    TensorFlow's CPU kernels do so only with oneDNN, which TensorFlow turns on
    by default on x86 CPUs with AVX-512 VNNI or BF16, or AMX, and not on
    others (an AVX2-only AMD EPYC, for example; `TF_ENABLE_ONEDNN_OPTS=1`
    before TensorFlow is imported turns it on); without it
    `Conv2DBackpropInput` and `Conv2DBackpropFilter` refuse a grouped
    convolution ("Gradients for grouped convolutions are not supported on
    CPU"). Probed once per process, eagerly, with both gradients of a 2-group
    3 x 3 convolution of a 4 x 4 image. Returns a bool.
    """
    with tf.init_scope():
        images = upstream = tf.ones([1, 4, 4, 4])
        kernel = tf.ones([3, 3, 2, 4])
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=images.shape, filter=kernel, out_backprop=upstream,
                strides=[1, 1, 1, 1], padding="SAME",
            )  # fmt: skip
            tf.raw_ops.Conv2DBackpropFilter(
                input=images, filter_sizes=kernel.shape, out_backprop=upstream,
                strides=[1, 1, 1, 1], padding="SAME",
            )  # fmt: skip
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def _grouped_conv2d(images, kernel, strides, padding, groups: int) -> tf.Tensor:
    """`tf.nn.conv2d` of `images` `[batch, h, w, groups * c]` with `kernel` `[k, k, c, groups * f]`.

    One grouped convolution where the device differentiates it
    (`native_grouped_convolutions`); otherwise one convolution per group,
    concatenated: the same values, differentiable everywhere, slower.
    """
    if groups == 1 or native_grouped_convolutions():
        return tf.nn.conv2d(images, kernel, strides, padding)
    outputs = [
        tf.nn.conv2d(x, k, strides, padding)
        for x, k in zip(tf.split(images, groups, axis=-1), tf.split(kernel, groups, axis=-1))
    ]
    return tf.concat(outputs, axis=-1)


def _convolution(layer, x: _Value, kernel, bias) -> _Value:
    """`layer` (a Conv2D) with per-row `kernel` `[rows, k, k, c, f]`: one grouped convolution."""
    y = _grouped_conv2d(
        x.as_channels(), _flat(kernel), list(layer.strides), layer.padding.upper(), x.rows
    )
    if bias is not None:
        y = y + _flat(bias)
    y = _Value(y, "channels", x.rows)
    if _is_elementwise(layer.activation):
        return _Value(layer.activation(y.tensor), "channels", x.rows)
    return _Value(layer.activation(y.as_rows()), "rows", x.rows)


def _split_convolution(layer, x: _Value, kernel, bias) -> _Value:
    """`layer` (a Conv2D) with per-row `kernel` `[rows, k, k, c, f]`, all rows' copies equal.

    The convolution and the gradient with respect to its input use one copy
    (an ordinary convolution of all rows' examples); only the per-row kernel
    gradient is a grouped convolution (one group per row).
    """
    strides, padding = [1, *layer.strides, 1], layer.padding.upper()
    rows = x.as_rows()
    folded = tf.reshape(rows, [-1, *rows.shape[2:]])
    count, batch = x.rows, rows.shape[1]

    @tf.custom_gradient
    def convolve(images, kernels):
        shared = kernels[0]
        output = tf.nn.conv2d(images, shared, strides, padding)

        def gradient(upstream):
            inputs = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(images), filter=shared, out_backprop=upstream,
                strides=strides, padding=padding,
            )  # fmt: skip
            row_images = tf.reshape(images, [count, batch, *images.shape[1:]])
            row_upstream = tf.reshape(upstream, [count, batch, *upstream.shape[1:]])
            if not native_grouped_convolutions():  # one filter gradient per row
                return inputs, tf.stack(
                    [
                        tf.raw_ops.Conv2DBackpropFilter(
                            input=row_images[r],
                            filter_sizes=shared.shape,
                            out_backprop=row_upstream[r],
                            strides=strides,
                            padding=padding,
                        )  # fmt: skip
                        for r in range(count)
                    ]
                )
            grouped_images = _Value(row_images, "rows", count).as_channels()
            grouped_upstream = _Value(row_upstream, "rows", count).as_channels()
            size = [*shared.shape[:3], count * shared.shape[3]]
            flat = tf.raw_ops.Conv2DBackpropFilter(
                input=grouped_images, filter_sizes=size, out_backprop=grouped_upstream,
                strides=strides, padding=padding,
            )  # fmt: skip
            per_row = tf.reshape(flat, [*shared.shape[:3], count, shared.shape[3]])
            return inputs, tf.transpose(per_row, [3, 0, 1, 2, 4])

        return output, gradient

    y = convolve(folded, kernel)
    y = tf.reshape(y, [count, batch, *y.shape[1:]])
    if bias is not None:
        y = y + bias[:, None, None, None, :]
    return _Value(layer.activation(y), "rows", count)


def _dense(layer, x: _Value, kernel, bias) -> _Value:
    """`layer` (a Dense) with per-row weights: one batched matmul."""
    rows = x.as_rows()
    shape = rows.shape
    y = tf.matmul(tf.reshape(rows, [shape[0], -1, shape[-1]]), kernel)
    if bias is not None:
        y = y + bias[:, None, :]
    return _Value(layer.activation(tf.reshape(y, [*shape[:-1], -1])), "rows", x.rows)


def _batch_norm(layer, x: _Value, gamma, beta, statistics: list) -> _Value:
    """Batch norm with each row's own statistics; appends `(mean, variance)` `[rows, c]`."""
    h = x.tensor
    if x.layout == "rows":
        axes = list(range(1, len(h.shape) - 1))
        gamma = None if gamma is None else tf.reshape(gamma, [h.shape[0]] + [1] * len(axes) + [-1])
        beta = None if beta is None else tf.reshape(beta, [h.shape[0]] + [1] * len(axes) + [-1])
    else:
        axes = list(range(len(h.shape) - 1))
        gamma = None if gamma is None else tf.reshape(gamma, [-1])
        beta = None if beta is None else tf.reshape(beta, [-1])
    mean, variance = tf.nn.moments(h, axes, keepdims=True)
    statistics.append((tf.reshape(mean, [x.rows, -1]), tf.reshape(variance, [x.rows, -1])))
    if not getattr(layer, "use_batch_statistics", True):
        mean = tf.convert_to_tensor(layer.moving_mean)
        variance = tf.convert_to_tensor(layer.moving_variance)
        if x.layout == "channels":
            mean, variance = tf.tile(mean, [x.rows]), tf.tile(variance, [x.rows])
    y = tf.nn.batch_normalization(h, mean, variance, beta, gamma, layer.epsilon)
    return _Value(y, x.layout, x.rows)


def _per_example(layer, x: _Value) -> _Value:
    """A weightless per-example layer: on the channels layout when it acts per channel,
    else with the rows folded into the batch."""
    if isinstance(layer, CHANNELWISE_LAYERS) or (
        isinstance(layer, keras.layers.Activation) and _is_elementwise(layer.activation)
    ):
        if x.layout == "channels" or len(x.tensor.shape) == 5:
            return _Value(layer(x.as_channels()), "channels", x.rows)
    rows = x.as_rows()
    y = layer(tf.reshape(rows, [rows.shape[0] * rows.shape[1], *rows.shape[2:]]))
    return _Value(tf.reshape(y, [rows.shape[0], rows.shape[1], *y.shape[1:]]), "rows", x.rows)


@dataclasses.dataclass
class _Node:
    """One layer call: its inputs and output (ids of Keras tensors) and the weights it reads."""

    layer: object
    inputs: list
    output: int
    weights: list  # positions in victim.trainable_variables (None: the weight is absent)
    kind: str


def _single(tensors):
    return tensors if isinstance(tensors, (list, tuple)) else [tensors]


def _kind(layer) -> tuple[Optional[str], str]:
    """`(kind, reason)`: how a layer is evaluated with a row axis, or None and why not."""
    name = f"{layer.name} ({type(layer).__name__})"
    if isinstance(layer, keras.Model):
        return None, f"{name} is a nested model"
    if isinstance(layer, keras.layers.Conv2D) and type(layer).__name__ == "Conv2D":
        if layer.data_format != "channels_last":
            return None, f"{name} is channels_first"
        if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
            return None, f"{name} is dilated or grouped"
        if layer.kernel_size[0] != layer.kernel_size[1] or layer.strides[0] != layer.strides[1]:
            return None, f"{name} has a non-square kernel or stride"
        return "conv", ""
    if type(layer).__name__ == "Dense":
        return "dense", ""
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else None
        if axis is None or axis not in (-1, len(layer.input.shape) - 1):
            return None, f"{name} normalises an axis other than the last"
        return "bn", ""
    if isinstance(layer, keras.layers.Add):
        return "add", ""
    if isinstance(layer, PER_EXAMPLE_LAYERS) and not layer.trainable_weights:
        return "example", ""
    return None, f"{name} is not a layer this layout evaluates per attack"


class _Program:
    """A functional network as a list of layer calls, evaluated with a leading row axis."""

    def __init__(self, network, variables):
        position = {id(v): i for i, v in enumerate(variables)}
        self.input = id(network.inputs[0])
        self.output = id(network.outputs[0])
        produced = {}
        for layer in network.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            produced[id(layer.output)] = layer
        self.nodes, self.reasons = [], []
        done = {self.input}
        remaining = [layer for layer in produced.values()]
        while remaining:
            ready = [
                layer for layer in remaining if all(id(t) in done for t in _single(layer.input))
            ]
            if not ready:
                self.reasons.append("the network's layers do not form a graph of single calls")
                break
            for layer in ready:
                remaining.remove(layer)
                done.add(id(layer.output))
                kind, reason = _kind(layer)
                if kind is None:
                    self.reasons.append(reason)
                    continue
                names = {
                    "conv": ("kernel", "bias"),
                    "dense": ("kernel", "bias"),
                    "bn": ("gamma", "beta"),
                }.get(kind, ())
                weights = []
                for attribute in names:
                    variable = getattr(layer, attribute, None)
                    weights.append(None if variable is None else position.get(id(variable)))
                inputs = [id(t) for t in _single(layer.input)]
                self.nodes.append(_Node(layer, inputs, id(layer.output), weights, kind))
        self.batch_norm = [n.layer for n in self.nodes if n.kind == "bn"]

    def __call__(self, weights: Sequence[tf.Tensor], x: tf.Tensor):
        """Logits `[rows, batch, classes]` and `(mean, variance)` `[rows, c]` per batch norm.

        `weights`: per trainable variable, `[rows, *shape]`; `x`: `[rows, batch, h, w, c]`.
        """
        rows = x.shape[0]
        values = {self.input: _Value(x, "rows", rows)}
        statistics = []
        for node in self.nodes:
            inputs = [values[i] for i in node.inputs]
            w = [None if i is None else weights[i] for i in node.weights]
            if node.kind == "conv":
                split = inputs[0].tensor.shape[-1] >= SPLIT_FROM_CHANNELS * (
                    inputs[0].rows if inputs[0].layout == "channels" else 1
                )
                convolution = _split_convolution if split else _convolution
                y = convolution(node.layer, inputs[0], *w)
            elif node.kind == "dense":
                y = _dense(node.layer, inputs[0], *w)
            elif node.kind == "bn":
                y = _batch_norm(node.layer, inputs[0], *w, statistics)
            elif node.kind == "add":
                layout = inputs[0].layout
                y = _Value(tf.add_n([v.get(layout) for v in inputs]), layout, rows)
            else:
                y = _per_example(node.layer, inputs[0])
            values[node.output] = y
        return values[self.output].as_rows(), statistics


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _program(victim) -> Optional[_Program]:
    if victim not in _PROGRAMS:
        _PROGRAMS[victim] = _Program(victim.network, victim.trainable_variables)
    return _PROGRAMS[victim]


def grouped_layout_reason(victim, update=None) -> Optional[str]:
    """Why `victim` (and the threat's `update`) cannot use the grouped layout; None if it can."""
    if update is not None and type(update) is not FedSGD:
        return f"the update {update!r} is not FedSGD (one gradient)"
    if victim.user_gradient is not None:
        return "the victim computes its gradient with a user function"
    if victim.outputs_probabilities:
        return "the victim outputs probabilities, not logits"
    if not victim.graph:
        return "the victim is a subclassed model (its layer graph is not visible)"
    program = _program(victim)
    if program.reasons:
        return "; ".join(program.reasons)
    weights = {i for node in program.nodes for i in node.weights if i is not None}
    if len(weights) != len(victim.trainable_variables):
        return "some trainable weights are read outside Conv2D, Dense and batch-norm layers"
    return None


def _row_distance(name: str, fallback: Callable) -> Callable:
    """The gradient distance of every row: `[rows, ...]` lists -> `[rows]`."""

    def total(parts):
        return tf.add_n([tf.reduce_sum(tf.reshape(p, [p.shape[0], -1]), axis=1) for p in parts])

    if name == "l2":
        return lambda dummy, observed: total([tf.square(d - o) for d, o in zip(dummy, observed)])
    if name == "cosine":

        def cosine(dummy, observed):
            dot = total([d * o for d, o in zip(dummy, observed)])
            dummy_norm = tf.sqrt(total([tf.square(d) for d in dummy]))
            observed_norm = tf.sqrt(total([tf.square(o) for o in observed]))
            return 1.0 - dot / (dummy_norm * observed_norm + 1e-12)

        return cosine
    return lambda dummy, observed: tf.vectorized_map(
        lambda pair: fallback(*pair), (list(dummy), list(observed))
    )


class GroupedGradientMatching(GradientMatching):
    """`GradientMatching(stacked=True)` with a weight copy per row: one batched graph.

    Same arguments, attributes and values as `GradientMatching` with
    `stacked=True` (one observation per row); `vectorize` is ignored.

    Raises:
      ValueError: the victim or update cannot be evaluated so
        (`grouped_layout_reason` says why), or what `GradientMatching` refuses.
    """

    layout = "grouped"

    def __init__(self, victim, distance="l2", priors=None, bn_first_layer_scale=1.0,
                 vectorize=False, update=None, stacked=True):  # fmt: skip
        super().__init__(
            victim, distance, priors, bn_first_layer_scale, False, update, stacked=True
        )
        reason = grouped_layout_reason(victim, self.update)
        if reason is not None:
            raise ValueError(
                f"the grouped layout cannot evaluate this victim: {reason}. "
                "Use layout='per_attack' (or 'auto')."
            )
        self.program = _program(victim)
        self.row_distance = _row_distance(distance, self.distance)

    def gradients(self, data: tf.Tensor, probabilities: tf.Tensor):
        """Every row's update `[rows, *variable.shape]` per variable, and batch-norm statistics.

        Args:
          data: `[rows, batch, h, w, c]` float32 dummy images.
          probabilities: `[rows, batch, classes]` float32 label probabilities.
        """
        victim = self.victim
        rows = data.shape[0]
        current = victim.current_weights()
        copies = [tf.broadcast_to(w, [rows, *w.shape]) for w in current]
        x = data
        if victim.preprocess is not None:
            folded = victim.preprocess(tf.reshape(data, [-1, *data.shape[2:]]))
            x = tf.reshape(folded, [rows, -1, *folded.shape[1:]])
        with tf.GradientTape() as tape:
            tape.watch(copies)
            logits, statistics = self.program(copies, x)
            # Each row's mean loss depends on its own weight copy only, so the
            # gradient of the sum holds each row's gradient in its slice.
            loss = tf.reduce_sum(tf.reduce_mean(soft_cross_entropy(probabilities, logits), 1))
        gradient = tape.gradient(loss, copies, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return gradient, statistics

    def per_start(self, data, probabilities, observed):
        """`(distance [rows], statistics)`, as `GradientMatching.per_start` with `stacked`."""
        gradient, statistics = self.gradients(data, probabilities)
        distance = self.row_distance(gradient, list(observed))
        return distance, statistics if self.needs_statistics else []


def attacks_objective(layout: str, rows: int, victim, distance, priors, bn_first_layer_scale,
                      vectorize, update) -> GradientMatching:  # fmt: skip
    """The objective of `rows` rows (attacks x starts, per replica), each with its observation.

    Args:
      layout: 'grouped' (`GroupedGradientMatching`), 'per_attack'
        (`GradientMatching(stacked=True)`), or 'auto': 'grouped' for two rows
        or more where `grouped_layout_reason` finds nothing against it.
      rows: rows evaluated together.
      victim, distance, priors, bn_first_layer_scale, vectorize, update: as
        `GradientMatching`.

    Raises:
      ValueError: an unknown layout; 'grouped' for a victim or update it cannot
        evaluate; what `GradientMatching` refuses.
    """
    if layout not in ATTACK_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(ATTACK_LAYOUTS)}.")
    if layout == "auto":
        grouped = rows > 1 and grouped_layout_reason(victim, update) is None
        layout = "grouped" if grouped else "per_attack"
    kind = GroupedGradientMatching if layout == "grouped" else GradientMatching
    return kind(victim, distance, priors, bn_first_layer_scale, vectorize, update, stacked=True)
