"""AWD-LSTM with a Mixture of Softmaxes (Yang et al. 2018, mixture_of_softmaxes.py):
the awd_lstm body, whose last layer has a size of its own, under K tied softmaxes.

Defaults are the MoS reference's Penn Treebank command (emsize 280, nhid 960,
nhidlast 620, 15 experts, dropouti 0.4, dropoutl 0.29, dropouth 0.225, and the
AWD-LSTM defaults it keeps: dropout 0.4, dropoute 0.1, wdrop 0.5): 22M parameters.
`awd_lstm_mos_wt2` is its WikiText-2 command: 35M. The decoder returns the
mixture's log-probabilities, which is what every consumer of the language model
(the criterion, fairseq-eval-lm, the cache pointer, dynamic evaluation, the hub)
reads; AR acts on the last layer's output after its dropout, TAR before it, as the
reference's.
"""
from dataclasses import dataclass, field

from fairseq.models import register_model, register_model_architecture

from .awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from .errors import fail
from .mixture_of_softmaxes import MixtureOfSoftmaxes


@dataclass
class AWDLSTMMoSConfig(AWDLSTMConfig):
    decoder_embed_dim: int = field(
        default=280, metadata={"help": "word embedding size, and each expert's latent size"})
    decoder_hidden_size: int = field(
        default=960, metadata={"help": "LSTM hidden size, but for the last layer"})
    decoder_last_hidden_size: int = field(
        default=620, metadata={"help": "the last LSTM layer's size (the reference's nhidlast)"})
    n_experts: int = field(default=15, metadata={"help": "softmaxes in the mixture (K)"})
    latent_dropout: float = field(
        default=0.29, metadata={"help": "locked dropout on the experts' latent vectors "
                                        "(the reference's dropoutl)"})
    input_dropout: float = field(
        default=0.4, metadata={"help": "locked dropout on the embedding output"})
    hidden_dropout: float = field(
        default=0.225, metadata={"help": "locked dropout between LSTM layers"})


class AWDLSTMMoSDecoder(AWDLSTMDecoder):
    def __init__(self, cfg: AWDLSTMMoSConfig, dictionary, dictionary_path: str = "dict.txt"):
        mixture = MixtureOfSoftmaxes(len(dictionary), cfg.decoder_last_hidden_size,
                                     cfg.decoder_embed_dim, cfg.n_experts, cfg.latent_dropout)
        super().__init__(cfg, dictionary, dictionary_path, cfg.decoder_last_hidden_size,
                         mixture)


@register_model("awd_lstm_mos", dataclass=AWDLSTMMoSConfig)
class AWDLSTMMoSModel(AWDLSTMModel):
    decoder_class = AWDLSTMMoSDecoder
    sizes = AWDLSTMModel.sizes + ["decoder_last_hidden_size", "n_experts"]

    @classmethod
    def build_model(cls, cfg, task):
        if not 0 <= cfg.latent_dropout < 1:
            fail(f"--latent-dropout must be in [0, 1), got {cfg.latent_dropout}")
        if cfg.untie_embeddings:
            fail("awd_lstm_mos ties its experts' softmax to the embedding, as the MoS "
                 "reference does (the latent vectors have the embedding's size): drop "
                 "--untie-embeddings")
        if cfg.softmax_cutoffs not in ("auto", "none"):
            fail("--softmax-cutoffs splits a single softmax; the mixture computes each "
                 "expert's softmax over the whole vocabulary: drop it for awd_lstm_mos")
        return super().build_model(cfg, task)


@register_model_architecture("awd_lstm_mos", "awd_lstm_mos_wt2")
def awd_lstm_mos_wt2(args):
    """The MoS reference README's WikiText-2 command."""
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 300)
    args.decoder_hidden_size = getattr(args, "decoder_hidden_size", 1150)
    args.decoder_last_hidden_size = getattr(args, "decoder_last_hidden_size", 650)
    args.input_dropout = getattr(args, "input_dropout", 0.55)
    args.hidden_dropout = getattr(args, "hidden_dropout", 0.2)
