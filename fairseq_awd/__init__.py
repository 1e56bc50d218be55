"""AWD-LSTM (Merity, Keskar & Socher 2017) as fairseq plugins: import registers them."""
import argparse

import torch

from . import ar_tar_criterion, awd_lstm, awd_lstm_translation, nt_asgd, variable_bptt_lm  # noqa: F401
from . import numpy2, safe_checkpoints

# fairseq's models and optimizers without a config dataclass (--arch lstm, --optimizer
# sgd) write an argparse.Namespace into their checkpoints, which torch >= 2.6's
# weights_only loading refuses: allow that one class, and nothing else.
torch.serialization.add_safe_globals([argparse.Namespace])
safe_checkpoints.install()
numpy2.restore_compat_long()
