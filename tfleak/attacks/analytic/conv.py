"""Reading one convolution's input off the gradient, by least squares (R-GAP).

For `Conv2D -> [activation] -> Flatten -> Dense (+bias)` as the model's last
Dense (one example): the classifier's input features `h` come from its
gradient (`tfleak.attacks.analytic.dense.classifier_features`); its bias
gradient is `delta = p - y`, so `dL/dh = W delta` and the gradient at the
convolution's output are known too. As in R-GAP (Zhu and Blaschko, "R-GAP:
Recursive Gradient Attack on Privacy", ICLR 2021, eq. 6-9), the image then
solves a linear system: the forward equations `conv(x) = z` of the units
whose pre-activation `z` the activation gives back (the active units of a
ReLU; every unit of an invertible sigmoid or tanh), and the kernel-gradient
equations `dL/dK = sum_p x_patch(p)^T dL/dz(p)`, solved by least squares in
float64. It is refused when there are fewer equations than pixel values;
when the system is rank deficient (a region that every ReLU filter leaves
inactive), the undetermined directions are set to zero and the note says so
(the recomputed update then usually does not match).
"""

from __future__ import annotations

import numpy as np

from tfleak.attacks.analytic.dense import classifier_features

__all__ = ["conv_input"]


def conv_input(victim, plan, gradient) -> tuple[np.ndarray, str]:
    """The input of the convolution under the classifier, for one example.

    Args:
      victim: the `tfleak.models.Victim` whose plan this is.
      plan: a `tfleak.attacks.analytic.plan.Plan` of kind 'conv'.
      gradient: one example's update, a list of float64 arrays matching
        `victim.trainable_variables`.

    Returns:
      `(inputs [1, h, w, c] float64, note)`: the convolution's input, and how
      it was read.

    Raises:
      ValueError: fewer equations than pixel values (the image is not
        determined by the gradient).
    """
    import scipy.linalg
    import scipy.sparse

    layer = plan.layer
    features = classifier_features(victim, gradient)
    delta = gradient[victim.classifier_bias_index]  # p - y of the one example
    weights = np.asarray(victim.classifier.kernel, np.float64)
    out_shape = tuple(int(d) for d in layer.output.shape[1:])  # (oh, ow, filters)
    h = features.reshape(out_shape)
    dh = (weights @ delta).reshape(out_shape)  # dL/dh
    peak = float(np.max(np.abs(h))) or 1.0
    if plan.activation == "relu":
        valid = h > 1e-7 * peak
        z, dz = h, dh * valid
    elif plan.activation == "sigmoid":
        hc = np.clip(h, 1e-12, 1 - 1e-12)
        valid = (h > 1e-6) & (h < 1 - 1e-6)
        z, dz = np.log(hc / (1 - hc)), dh * hc * (1 - hc)
    elif plan.activation == "tanh":
        hc = np.clip(h, -1 + 1e-12, 1 - 1e-12)
        valid = np.abs(h) < 1 - 1e-6
        z, dz = np.arctanh(hc), dh * (1 - hc * hc)
    else:
        valid = np.ones_like(h, bool)
        z, dz = h, dh
    if layer.use_bias:
        z = z - np.asarray(layer.bias, np.float64)
    kernel = np.asarray(layer.kernel, np.float64)  # [kh, kw, c, filters]
    below_shape = tuple(int(d) for d in layer.input.shape[1:])  # (H, W, C)
    rows_f, rows_g, columns, taps, inside = _conv_indices(layer, below_shape, out_shape)
    pixels = int(np.prod(below_shape))
    values_f = np.broadcast_to(kernel[None, None], rows_f.shape)
    oh, ow, filters = out_shape
    values_g = np.broadcast_to(dz[:, :, None, None, None, :], rows_g.shape)
    forward = scipy.sparse.csr_matrix(
        (values_f[inside], (rows_f[inside], columns[inside])), shape=(oh * ow * filters, pixels)
    )
    backward = scipy.sparse.csr_matrix(
        (values_g[inside], (rows_g[inside], columns[inside])), shape=(taps, pixels)
    )
    keep = valid.reshape(-1)
    system = scipy.sparse.vstack([forward[keep], backward]).tocsr()
    target = np.concatenate([z.reshape(-1)[keep], gradient[plan.kernel_index].reshape(-1)])
    norms = np.sqrt(np.asarray(system.multiply(system).sum(axis=1))).reshape(-1)
    used = norms > 0
    system = scipy.sparse.diags(1.0 / norms[used]) @ system[used]
    target = target[used] / norms[used]
    if system.shape[0] < pixels:
        raise ValueError(
            f"{victim.name}: the convolution gives {system.shape[0]} equations for "
            f"{pixels} pixel values ({int(keep.sum())} active units and {taps} kernel "
            "gradients); the image is not determined, so analytic recovery does not apply."
        )
    normal = (system.T @ system).toarray()
    factor, info = scipy.linalg.lapack.dpotrf(normal)
    rcond = 0.0
    if info == 0:
        rcond, _ = scipy.linalg.lapack.dpocon(factor, np.abs(normal).sum(axis=0).max())
    note = "one example, through the convolution"
    if rcond < 1e-12:
        # Some directions of the image (e.g. a region every filter leaves inactive) are
        # not determined: a tiny ridge keeps the determined part exact and sets the
        # undetermined directions to zero. The recomputed update then decides success.
        ridge = 1e-9 * float(np.trace(normal)) / pixels
        factor, info = scipy.linalg.lapack.dpotrf(normal + ridge * np.eye(pixels))
        note = (
            f"one example, through the convolution, whose {system.shape[0]} equations "
            f"leave part of the {pixels} pixel values undetermined (reciprocal condition "
            f"number {rcond:.2g}; those directions are set to zero)"
        )
    solution = scipy.linalg.cho_solve((factor, False), system.T @ target)
    return solution.reshape((1, *below_shape)), note


def _conv_indices(layer, below_shape, out_shape):
    """Index arrays of a Conv2D as a sparse matrix, each `[oh, ow, kh, kw, c, filters]`.

    Returns `(forward rows, kernel-gradient rows, pixel columns, kernel size,
    inside)`: output unit `(oy, ox, f)` reads pixel `(oy s + ky d - pad, ...)`
    with weight `K[ky, kx, c, f]`; kernel-gradient entry `(ky, kx, c, f)` sums
    that pixel times `dL/dz[oy, ox, f]`; `inside` drops the zero padding.
    """
    height, width, channels = below_shape
    oh, ow, filters = out_shape
    kh, kw = (int(d) for d in layer.kernel_size)
    sy, sx = (int(d) for d in layer.strides)
    dy, dx = (int(d) for d in layer.dilation_rate)
    if layer.padding == "same":
        top = max((oh - 1) * sy + (kh - 1) * dy + 1 - height, 0) // 2
        left = max((ow - 1) * sx + (kw - 1) * dx + 1 - width, 0) // 2
    else:
        top = left = 0
    oy, ox, ky, kx, c, f = np.meshgrid(
        np.arange(oh), np.arange(ow), np.arange(kh), np.arange(kw), np.arange(channels),
        np.arange(filters), indexing="ij",
    )  # fmt: skip
    iy, ix = oy * sy + ky * dy - top, ox * sx + kx * dx - left
    inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    columns = (np.clip(iy, 0, height - 1) * width + np.clip(ix, 0, width - 1)) * channels + c
    forward = (oy * ow + ox) * filters + f
    backward = ((ky * kw + kx) * channels + c) * filters + f
    return forward, backward, columns, kh * kw * channels * filters, inside
