"""UnSplit: model inversion without the device's weights, only its architecture.

Erdogan, Kupcu, Cicek, "UnSplit: Data-Oblivious Model Inversion, Model
Stealing, and Label Inference Attacks Against Split Learning" (WPES 2022,
https://arxiv.org/abs/2108.09033, Algorithm 1). The server knows how the
on-device stage is built but not its trained weights. It optimises a clone of
that stage (fresh weights) and the unknown inputs together, alternating
between the two, so that the clone's codes match the intercepted ones:

    x*, W* = argmin_{x in [0, 1]^d, W}  ||f_W(x) - c||^2 / dim(c)  +  lambda * TV(x)

Each of `rounds` rounds takes `image_steps` Adam steps on the images (clone
fixed), then `model_steps` Adam steps on the clone's weights (images fixed).
One clone serves the whole batch: the device's weights are the same for every
code, so every code constrains them. The clone runs in inference mode (its
batch-norm layers use their initial moving statistics; their scale and
offset are learned). TV is `tfleak.split.whitebox.total_variation`.

The clone's weights, and so the image's contrast, are found only up to a
scale and an offset: the optimised images hold the strokes on a grey ground.
With `rescale` (the default) each reconstruction's 1st to 99th percentile
intensities are stretched onto [0, 1], which needs no ground truth.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfleak.split.whitebox import WhiteBoxResult, flat_codes, start_image, total_variation

__all__ = ["UnSplit"]


class UnSplit:
    """Alternating optimisation of a clone of the device stage and the inputs.

    Example:
      >>> attack = UnSplit(lambda: split.device_stage(split.TargetModel(), cut=1))
      >>> result = attack(intercepted_codes)     # [batch, 33, 33, 32]
      >>> result.reconstructions.shape           # [batch, 105, 105, 1]
    """

    def __init__(
        self,
        architecture: Callable[[], keras.Model],
        rounds: int = 100,
        image_steps: int = 5,
        model_steps: int = 5,
        image_learning_rate: float = 0.05,
        model_learning_rate: float = 1e-3,
        tv_weight: float = 0.05,
        init=None,
        seed: int = 0,
        rescale: bool = True,
        image_shape=(105, 105, 1),
    ):
        """Configures the attack.

        Args:
          architecture: builds a fresh, untrained model of the device stage's
            architecture (images `[batch, *image_shape]` -> codes); called once
            per `__call__`. What the server knows; never the trained weights.
          rounds: alternations of image and model steps, >= 1.
          image_steps: Adam steps on the images per round, >= 1.
          model_steps: Adam steps on the clone's weights per round, >= 0.
          image_learning_rate: the images' Adam step size, in pixel units, > 0.
          model_learning_rate: the clone's Adam step size, > 0.
          tv_weight: lambda, the total-variation weight, >= 0.
          init: start image float32 `image_shape` in [0, 1] (e.g. the mean
            surrogate image); None starts from grey 0.5.
          seed: seed of the clone's initial weights.
          rescale: stretch each reconstruction's 1st-99th percentile onto [0, 1].
          image_shape: `[height, width, channels]` of the images.

        Raises:
          ValueError: a count below its minimum, a step size or weight out of
            range or not finite, or an `init` of another shape or outside [0, 1].
        """
        for name, value, least in (("rounds", rounds, 1), ("image_steps", image_steps, 1),
                                   ("model_steps", model_steps, 0)):  # fmt: skip
            if int(value) != value or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}; got {value}.")
        for name, value in (("image_learning_rate", image_learning_rate),
                            ("model_learning_rate", model_learning_rate)):  # fmt: skip
            if not 0 < value < np.inf:
                raise ValueError(f"{name} must be finite and > 0; got {value}.")
        if not 0 <= tv_weight < np.inf:
            raise ValueError(f"tv_weight must be finite and >= 0; got {tv_weight}.")
        self.architecture = architecture
        self.rounds, self.image_steps = int(rounds), int(image_steps)
        self.model_steps = int(model_steps)
        self.image_learning_rate = image_learning_rate
        self.model_learning_rate = model_learning_rate
        self.tv_weight, self.seed, self.rescale = tv_weight, int(seed), bool(rescale)
        self.init = start_image(init, image_shape)

    @property
    def hyperparameters(self) -> dict:
        return {
            "rounds": self.rounds,
            "image_steps": self.image_steps,
            "model_steps": self.model_steps,
            "image_learning_rate": self.image_learning_rate,
            "model_learning_rate": self.model_learning_rate,
            "tv_weight": self.tv_weight,
            "seed": self.seed,
            "rescale": self.rescale,
            "init": "grey 0.5" if np.all(self.init == 0.5) else "given image",
        }

    def __repr__(self) -> str:
        return "UnSplit(" + ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items()) + ")"

    def __call__(self, codes) -> WhiteBoxResult:
        """Inverts intercepted codes without the device's weights.

        Args:
          codes: float32 `[batch, ...]` as the device sent them, or `[batch, dim]`.

        Returns:
          A `WhiteBoxResult`: reconstructions `[batch, *image_shape]` in [0, 1],
          and per code the final code loss against the clone and the TV.

        Raises:
          ValueError: codes that are not finite, or that the clone's codes do
            not match in size.
        """
        codes = flat_codes(codes)
        keras.utils.set_random_seed(self.seed)
        clone = self.architecture()
        produced = int(np.prod(clone.output_shape[1:]))
        if produced != codes.shape[1]:
            raise ValueError(
                f"the architecture sends codes of {produced} values, the intercepted codes hold "
                f"{codes.shape[1]}; build the stage of the same cut."
            )
        images = keras.Variable(np.repeat(self.init[None], len(codes), 0), name="unsplit_images")
        weights = clone.trainable_variables
        image_optimizer = keras.optimizers.Adam(self.image_learning_rate)
        model_optimizer = keras.optimizers.Adam(self.model_learning_rate)
        image_optimizer.build([images])
        model_optimizer.build(weights)
        target = tf.constant(codes)

        def losses():
            x = tf.convert_to_tensor(images)
            predicted = tf.reshape(clone(x, training=False), [len(codes), -1])
            return tf.reduce_mean(tf.square(predicted - target), axis=1), total_variation(x)

        def objective():
            code_loss, tv = losses()
            return tf.reduce_sum(code_loss + self.tv_weight * tv)

        @tf.function
        def optimise():
            for _ in tf.range(self.rounds):
                for _ in tf.range(self.image_steps):
                    with tf.GradientTape() as tape:
                        loss = objective()
                    image_optimizer.apply([tape.gradient(loss, images)], [images])
                    images.assign(tf.clip_by_value(images, 0.0, 1.0))
                for _ in tf.range(self.model_steps):
                    with tf.GradientTape() as tape:
                        loss = objective()
                    model_optimizer.apply(tape.gradient(loss, weights), weights)
            return losses()

        code_loss, tv = optimise()
        reconstructions = images.numpy()
        if self.rescale:
            low, high = np.percentile(reconstructions, [1, 99], axis=(1, 2, 3), keepdims=True)
            reconstructions = np.clip((reconstructions - low) / np.maximum(high - low, 1e-6), 0, 1)
        return WhiteBoxResult(
            reconstructions.astype(np.float32), code_loss.numpy(), tv.numpy(), self.hyperparameters
        )
