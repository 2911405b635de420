"""Threat models: what a client shares, and what defends it.

- `tfleak.threats.federated`: one gradient (`FedSGD`) or K local steps
  (`FedAvg`), for the client (`share`) and the attacker (`simulate`);
  `parse_update` reads 'gradient', 'fedavg', 'fedavg:K/LR[/B]'.
- `tfleak.threats.dpsgd`: DP-SGD (`DPSGD`), the client's rule for computing a
  clipped and noised update.
- `tfleak.threats.transforms`: noise, pruning and quantisation of the computed
  update, each with the adaptive attacker's view.
- `tfleak.threats.defenses`: DP-SGD and the transforms chained on an update by
  `DefendedUpdate`; `parse_defense` reads 'noise:1e-3', 'dpsgd:1.0/0.5',
  'prune:0.9', 'quantize:8'.
"""

from tfleak.threats import defenses, dpsgd, federated, transforms
from tfleak.threats.defenses import DefendedUpdate, parse_defense, parse_defenses
from tfleak.threats.federated import FedAvg, FedSGD, parse_update

__all__ = [
    "defenses",
    "dpsgd",
    "federated",
    "transforms",
    "DefendedUpdate",
    "parse_defense",
    "parse_defenses",
    "FedAvg",
    "FedSGD",
    "parse_update",
]
