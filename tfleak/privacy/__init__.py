"""Differential privacy for the split target: DP-Adam training (`dp`) and its epsilon
(`accounting`)."""

from tfleak.privacy.accounting import EPSILON_CONVERSIONS, RDP_ORDERS, compute_epsilon
from tfleak.privacy.dp import (
    DP_VARIANTS,
    build_dp_target,
    compile_dp_target,
    cut_on_device,
    dp_target_model,
    jacobian_per_example_gradients,
    load_on_device,
    per_example_gradients,
    save_on_device,
)

__all__ = [
    "EPSILON_CONVERSIONS",
    "RDP_ORDERS",
    "compute_epsilon",
    "DP_VARIANTS",
    "build_dp_target",
    "compile_dp_target",
    "cut_on_device",
    "dp_target_model",
    "jacobian_per_example_gradients",
    "load_on_device",
    "per_example_gradients",
    "save_on_device",
]
