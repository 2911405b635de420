"""Threat models: what a client shares, and what defends it.

- `tfleak.threats.federated`: one gradient (`FedSGD`) or K local steps
  (`FedAvg`), for the client (`share`) and the attacker (`simulate`);
  `parse_update` reads 'gradient', 'fedavg', 'fedavg:K/LR[/B]'.
- `tfleak.threats.defenses`: noise, DP-SGD, pruning and quantisation of the
  shared update, each with the adaptive attacker's view, chained by
  `DefendedUpdate`; `parse_defense` reads 'noise:1e-3', 'dpsgd:1.0/0.5',
  'prune:0.9', 'quantize:8'.
"""

from tfleak.threats import defenses, federated
from tfleak.threats.defenses import DefendedUpdate, parse_defense, parse_defenses
from tfleak.threats.federated import FedAvg, FedSGD, parse_update

__all__ = [
    "defenses",
    "federated",
    "DefendedUpdate",
    "parse_defense",
    "parse_defenses",
    "FedAvg",
    "FedSGD",
    "parse_update",
]
