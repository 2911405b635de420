"""One call that tells a Keras user how much their own classifier's updates leak.

- `run`: `audit(model, data, ...)`, which attacks a clone of the model per
  threat, defence and attack (the module says how).
- `inputs`: the model, images, threats and defence chains it is given, checked.
- `report`: what it measured (`AuditReport`, `SettingResult`, `WorstCase`).
"""

from tfleak.audit.report import EXACT_ERROR, AuditReport, SettingResult, WorstCase
from tfleak.audit.run import ATTACKS, DEFAULT_ATTACKS, audit

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "EXACT_ERROR", "SettingResult", "WorstCase",
           "AuditReport", "audit"]  # fmt: skip
