"""What every script in `examples/` and `benchmarks/` shares: short usage errors, sane flags.

absl's `app.run` answers a `UsageError` by printing the whole flag help (60-90
lines) before the one line that matters. `run(main)` prints that one line and a
pointer to `--help` instead, and exits with status 2. Library code never reads
flags; scripts validate theirs up front with the helpers below and raise
`app.UsageError`.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Callable, Iterable, Optional

from absl import app

__all__ = [
    "run",
    "quiet_tensorflow",
    "quiet_tensorflow_startup",
    "require_finite",
    "parse_float_list",
]


def quiet_tensorflow_startup() -> None:
    """Imports TensorFlow without its start-up lines, unless TF_CPP_MIN_LOG_LEVEL asks for them.

    TensorFlow 2.16+ writes its start-up lines (oneDNN, CUDA stubs, "failed
    call to cuInit" on a machine without a GPU) to standard error before its
    log level applies. `import tfleak` therefore imports TensorFlow, and lists
    its devices, with file descriptor 2 pointed at /dev/null, unless
    TensorFlow is already imported or `TF_CPP_MIN_LOG_LEVEL` is set to 0 or 1.
    Python exceptions are unaffected; errors after start-up print as usual.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1"):
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): import as usual
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Keeps TF's C++ INFO/WARNING lines and Python deprecation chatter off the terminal."""
    quiet_tensorflow_startup()
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl is a dependency
        pass


def run(main: Callable) -> None:
    """`app.run(main)`, but a `UsageError` prints one line and `--help`, not the whole help."""
    program = os.path.basename(sys.argv[0]) or "script"

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            sys.stderr.write(f"{program}: error: {error}\nRun `{program} --help` for the flags.\n")
            sys.exit(2)

    quiet_tensorflow()
    app.run(guarded)


def require_finite(
    name: str,
    value: Optional[float],
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    inclusive: tuple[bool, bool] = (True, True),
) -> None:
    """Raises `app.UsageError` unless `value` is a finite float in the given range.

    Args:
      name: the flag's name, without dashes.
      value: the flag's value; None passes (the flag is optional).
      minimum, maximum: bounds, None for none.
      inclusive: whether each bound may be reached.
    """
    if value is None:
        return
    if not math.isfinite(value):
        raise app.UsageError(f"--{name} must be a finite number; got {value}.")
    low_ok = minimum is None or (value >= minimum if inclusive[0] else value > minimum)
    high_ok = maximum is None or (value <= maximum if inclusive[1] else value < maximum)
    if not (low_ok and high_ok):
        low = "" if minimum is None else ("[" if inclusive[0] else "(") + f"{minimum}"
        high = "" if maximum is None else f"{maximum}" + ("]" if inclusive[1] else ")")
        interval = f"{low or '(-inf'}, {high or 'inf)'}"
        raise app.UsageError(f"--{name} must be in {interval}; got {value}.")


def parse_float_list(name: str, values: Iterable[str], minimum: Optional[float] = None) -> list:
    """Comma-list flag -> finite floats (each >= `minimum`), or `app.UsageError`."""
    parsed = []
    for text in values:
        try:
            value = float(text)
        except ValueError as error:
            raise app.UsageError(f"--{name} holds {text!r}, which is not a number.") from error
        require_finite(name, value, minimum=minimum)
        parsed.append(value)
    return parsed
