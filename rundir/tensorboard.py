"""tensorboardX for a run's event files, imported without PyTorch.

tensorboardX imports torch at its top where torch is installed (the test requirements install
it for the transformers parity tests) only to name a type in annotations. That import costs
~1.6 s, on the 2-core CPU, for every training run's and every evaluation's summaries. The
project hands tensorboardX numpy arrays and Python numbers, never torch tensors, so torch is
hidden while tensorboardX imports (its own fallback for a host without torch) and is
importable again afterwards.
"""
from __future__ import annotations

import sys
from types import ModuleType

from absl import logging


def import_tensorboardx() -> ModuleType | None:
  """The tensorboardX package (its `summary` module imported too), or None with a warning
  where it is not installed."""
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # `import torch` raises ImportError until removed
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    import tensorboardX.summary  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    logging.warning("tensorboardX is not installed: no TensorBoard event files "
                    "(pip install -r requirements.txt)")
    return None
  finally:
    if hide_torch and sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return tensorboardX
