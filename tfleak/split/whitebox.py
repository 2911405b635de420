"""White-box model inversion: optimise an input until the device's code matches.

The saved on-device stage is exactly what an attacker who intercepts codes can
load, so it can invert a code `c` directly: regularised maximum likelihood of
He, Zhang, Lee, "Model inversion attacks against collaborative inference"
(ACSAC 2019, Section 4.1, Eq. 3),

    x* = argmin_{x in [0, 1]^d}  ||f(x) - c||^2 / dim(c)  +  lambda * TV(x)
                                 (+ mu * mean((x - x0)^2), an optional data prior),

with `f` the on-device stage in inference mode, TV the anisotropic total
variation of `tfleak.attacks.priors.total_variation` (mean absolute difference of
horizontal plus vertical neighbours, per image) and `x0` the start image. The
batch is one `keras.Variable` `[batch, height, width, channels]` optimised at
once with `keras.optimizers.Adam` (its loss is the sum of the examples'
losses, so each example's optimisation is independent of the others),
projected onto the box [0, 1] after every step, in one `tf.function`. The code
may have any shape (`[batch, 1, 1, 32]` for the published cut, `[batch, 33,
33, 32]` after the first block); it is compared flattened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfleak.attacks.priors import total_variation as _prior_total_variation

__all__ = [
    "WhiteBoxInversion",
    "WhiteBoxResult",
    "flat_codes",
    "start_image",
    "total_variation",
]

# Adam's constants; epsilon as the attack has always used (Keras' default is 1e-7).
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-8


def total_variation(images: tf.Tensor) -> tf.Tensor:
    """Anisotropic total variation per image, `[batch]` float32 >= 0.

    `tfleak.attacks.priors.total_variation` with every image its own start:
    `mean |x[i, j+1] - x[i, j]| + mean |x[i+1, j] - x[i, j]|` over the pixel
    pairs and channels of each image `[batch, height, width, channels]`.
    """
    return _prior_total_variation(images[:, None])


def start_image(init, image_shape) -> np.ndarray:
    """An inversion's start image: `init` checked, or grey 0.5; float32 `image_shape`.

    Raises:
      ValueError: an `init` of another shape or outside [0, 1].
    """
    init = np.full(image_shape, 0.5, np.float32) if init is None else np.asarray(init)
    if init.shape != tuple(image_shape) or not np.all((init >= 0) & (init <= 1)):
        raise ValueError(
            f"init must be one image {tuple(image_shape)} in [0, 1]; got shape {init.shape}, "
            f"range [{init.min():.3g}, {init.max():.3g}]."
        )
    return init.astype(np.float32)


def flat_codes(codes) -> np.ndarray:
    """Intercepted codes `[batch, ...]` as float32 `[batch, dim]`.

    Raises:
      ValueError: codes that hold NaN or infinity.
    """
    codes = np.asarray(codes, np.float32).reshape(len(codes), -1)
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes hold NaN or infinity; invert finite codes.")
    return codes


@dataclass
class WhiteBoxResult:
    """What `WhiteBoxInversion` found.

    Attributes:
      reconstructions: float32 `[batch, 105, 105, 1]` in [0, 1].
      code_loss: per image, the final `||f(x) - c||^2 / dim(c)`, `[batch]`.
      total_variation: per image, the final TV, `[batch]`.
      hyperparameters: steps, learning rate, TV weight, initialisation.
    """

    reconstructions: np.ndarray
    code_loss: np.ndarray
    total_variation: np.ndarray
    hyperparameters: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"WhiteBoxResult(images={len(self.reconstructions)}, "
            f"code_loss={float(np.mean(self.code_loss)):.4g}, "
            f"total_variation={float(np.mean(self.total_variation)):.4g}, "
            + ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
            + ")"
        )


class WhiteBoxInversion:
    """Regularised maximum-likelihood inversion of codes through a known on-device stage.

    Example:
      >>> attack = WhiteBoxInversion(on_device, init=mean_surrogate_image)
      >>> result = attack(intercepted_codes)          # e.g. [batch, 1, 1, 32]
      >>> result.reconstructions.shape                # [batch, 105, 105, 1]
    """

    def __init__(
        self,
        on_device: Callable,
        steps: int = 300,
        learning_rate: float = 0.05,
        tv_weight: float = 0.05,
        init=None,
        prior_weight: float = 0.0,
        image_shape=(105, 105, 1),
    ):
        """Configures the attack.

        Args:
          on_device: the target's on-device stage (a Keras model), images
            `[batch, 105, 105, 1]` in [0, 1] -> codes; called with
            `training=False`, never changed.
          steps: Adam steps, >= 1.
          learning_rate: Adam's step size in pixel units, > 0.
          tv_weight: lambda, the weight of the total-variation prior, >= 0.
          prior_weight: weight of a Gaussian image prior centred on `init`,
            `mean((x - init)^2)`, >= 0 (0 = He et al.'s rMLE; > 0 uses the
            surrogate images' mean as a data prior).
          init: where the optimisation starts (and the prior's centre): one
            image float32 `[105, 105, 1]` in [0, 1] for every code (e.g. the
            mean surrogate image); None starts from grey 0.5. `__call__` may
            instead take one start image per code (e.g. a decoder's
            reconstructions).
          image_shape: `[height, width, channels]` of the images.

        Raises:
          ValueError: a hyperparameter out of range or not finite, or an
            `init` of another shape or outside [0, 1].
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}.")
        if not 0 < learning_rate < np.inf or not 0 <= tv_weight < np.inf:
            raise ValueError(
                f"need a finite learning_rate > 0 and tv_weight >= 0; got {learning_rate}, "
                f"{tv_weight}."
            )
        if not 0 <= prior_weight < np.inf:
            raise ValueError(f"prior_weight must be finite and >= 0; got {prior_weight}.")
        init = start_image(init, image_shape)
        self.on_device = on_device
        self.steps, self.learning_rate, self.tv_weight = int(steps), learning_rate, tv_weight
        self.prior_weight = prior_weight
        self.init = init

    @property
    def hyperparameters(self) -> dict:
        return {
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "tv_weight": self.tv_weight,
            "prior_weight": self.prior_weight,
            "init": "grey 0.5" if np.all(self.init == 0.5) else "given image",
        }

    def __repr__(self) -> str:
        return "WhiteBoxInversion(" + ", ".join(
            f"{k}={v!r}" for k, v in self.hyperparameters.items()
        ) + ")"  # fmt: skip

    def _losses(self, images, codes):
        predicted = tf.reshape(self.on_device(images, training=False), [tf.shape(codes)[0], -1])
        code_loss = tf.reduce_mean(tf.square(predicted - codes), axis=1)
        return code_loss, total_variation(images)

    def _invert(self, codes: np.ndarray, start: np.ndarray):
        """`steps` Adam steps from `start` `[n, h, w, c]` towards `codes` `[n, dim]`."""
        images = keras.Variable(start, trainable=True, name="inverted_images")
        optimizer = keras.optimizers.Adam(
            self.learning_rate, beta_1=_BETA_1, beta_2=_BETA_2, epsilon=_EPSILON
        )
        optimizer.build([images])
        codes, start = tf.constant(codes), tf.constant(start)

        @tf.function
        def optimise():
            for _ in tf.range(self.steps):
                with tf.GradientTape() as tape:
                    x = tf.convert_to_tensor(images)
                    code_loss, tv = self._losses(x, codes)
                    prior = tf.reduce_mean(tf.square(x - start), axis=[1, 2, 3])
                    loss = tf.reduce_sum(
                        code_loss + self.tv_weight * tv + self.prior_weight * prior
                    )
                optimizer.apply([tape.gradient(loss, images)], [images])
                images.assign(tf.clip_by_value(images, 0.0, 1.0))
            x = tf.convert_to_tensor(images)
            code_loss, tv = self._losses(x, codes)
            return x, code_loss, tv

        return [value.numpy() for value in optimise()]

    def __call__(self, codes, init_images=None, batch_size: int = 64) -> WhiteBoxResult:
        """Inverts codes.

        Args:
          codes: float32 `[batch, ...]` as the device sent them (`[batch, 1,
            1, 32]` for the published cut), or flattened `[batch, dim]`.
          init_images: optional float32 `[batch, 105, 105, 1]` in [0, 1], one
            start (and prior centre) per code; default: `init` for all.
          batch_size: images optimised together.

        Returns:
          A `WhiteBoxResult`.
        """
        codes = flat_codes(codes)
        if init_images is None:
            init_images = np.repeat(self.init[None], len(codes), axis=0)
        init_images = np.asarray(init_images, np.float32)
        if init_images.shape != (len(codes), *self.init.shape):
            raise ValueError(
                f"init_images must be {(len(codes), *self.init.shape)}, one per code; got "
                f"{init_images.shape}."
            )
        if not np.all((init_images >= 0) & (init_images <= 1)):
            raise ValueError("init_images must lie in [0, 1].")
        outputs = [], [], []
        for start in range(0, len(codes), batch_size):
            chunk = slice(start, start + batch_size)
            for output, value in zip(outputs, self._invert(codes[chunk], init_images[chunk])):
                output.append(value)
        reconstructions, code_loss, tv = (np.concatenate(o) for o in outputs)
        return WhiteBoxResult(reconstructions, code_loss, tv, self.hyperparameters)
