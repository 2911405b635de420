"""Differential privacy: DP-SGD / DP-Adam training of Keras models (`dp`), the per-microbatch
records it clips (`records`), the Gaussian sum query under it (`query`), its epsilon
(`accounting`), and the split target trained with it (`target`)."""

from tfleak.privacy.accounting import (
    EPSILON_CONVERSIONS,
    RDP_ORDERS,
    compute_epsilon,
    gaussian_epsilon,
)
from tfleak.privacy.dp import DPModel
from tfleak.privacy.query import clip_records, clipped_sum, gaussian_sum
from tfleak.privacy.records import (
    DP_VARIANTS,
    jacobian_per_example_gradients,
    per_example_gradients,
)
from tfleak.privacy.target import (
    build_dp_target,
    compile_dp_target,
    cut_on_device,
    dp_target_model,
    load_on_device,
    save_on_device,
)

__all__ = [
    "EPSILON_CONVERSIONS",
    "RDP_ORDERS",
    "compute_epsilon",
    "gaussian_epsilon",
    "DP_VARIANTS",
    "DPModel",
    "build_dp_target",
    "compile_dp_target",
    "cut_on_device",
    "dp_target_model",
    "jacobian_per_example_gradients",
    "load_on_device",
    "per_example_gradients",
    "save_on_device",
    "clip_records",
    "clipped_sum",
    "gaussian_sum",
]
