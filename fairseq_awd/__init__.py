"""AWD-LSTM (Merity, Keskar & Socher 2017) as fairseq plugins: import registers them."""
from . import ar_tar_criterion, awd_lstm, awd_lstm_mos, awd_lstm_translation, nt_asgd  # noqa: F401
from . import variable_bptt_lm  # noqa: F401
from . import compat

compat.install()
