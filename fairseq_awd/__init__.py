"""AWD-LSTM (Merity, Keskar & Socher 2017) as fairseq plugins: import registers them."""
from . import awd_lstm, ar_tar_criterion  # noqa: F401
