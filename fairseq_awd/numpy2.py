"""fairseq 0.12 on numpy 2.

numpy 2 removed `np.compat`, which fairseq-fixed 0.12.3.1 still calls for one
dtype (`np.compat.long` in token_block_dataset.py and language_pair_dataset.py:
fairseq's `language_modeling` and `translation` tasks). A current CUDA image ships
numpy 2 and a scipy built for it, so pinning numpy < 2 breaks those images instead.
The least intrusive fix: give numpy back that one alias, as numpy 1.x defined it
(the Python int), only where it is missing. Nothing else of numpy changes.
"""
import types

import numpy as np


def restore_compat_long():
    if not hasattr(np, "compat"):
        np.compat = types.ModuleType("numpy.compat")
    if not hasattr(np.compat, "long"):
        np.compat.long = int
