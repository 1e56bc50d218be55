"""AWD-LSTM (Merity, Keskar & Socher 2017) as fairseq plugins: import registers them."""
from . import ar_tar_criterion, awd_lstm, nt_asgd, variable_bptt_lm  # noqa: F401
