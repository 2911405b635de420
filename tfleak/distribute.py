"""One helper that turns a strategy name into a `tf.distribute.Strategy`.

Every example builds and trains its models under `get_strategy(name).scope()`
(as tensorflow/models `official/common/distribute_utils.py` does).
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["STRATEGIES", "get_strategy"]

STRATEGIES = ("default", "mirrored", "tpu", "multi_worker")


def get_strategy(
    name: str = "default", tpu_address: str = "", devices: Optional[Sequence[str]] = None
) -> tf.distribute.Strategy:
    """Returns a real `tf.distribute.Strategy` for `name`, never `None`.

    Args:
      name: one of `STRATEGIES`:
        - `default`: the default strategy (one device, no-op scope);
        - `mirrored`: `MirroredStrategy` over `devices`, by default every
          local GPU (or the CPU);
        - `tpu`: `TPUStrategy` on the TPU at `tpu_address`;
        - `multi_worker`: `MultiWorkerMirroredStrategy` configured by `TF_CONFIG`.
      tpu_address: gRPC address or name of the TPU, for `tpu` only ('' = local).
      devices: for `mirrored` only, e.g. `["/cpu:0", "/cpu:1"]` after
        splitting the CPU into logical devices.

    Raises:
      ValueError: `name` is not one of `STRATEGIES`, or no TPU is found.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as error:
            raise ValueError(
                f"no TPU found at {tpu_address!r} ({error}); pass the TPU's name or "
                "address, or use --strategy=default/mirrored on this machine."
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
