"""The AWD-LSTM body (Merity et al. 2017): embedding, embedding dropout (4.3),
locked dropout on the input, between layers and on the output (4.2), and a stack
of weight-dropped LSTMs (2) whose last layer may have its own size (4.5).

One body serves every model of the package, as fastai's AWD_LSTM serves its
heads: the language model puts a tied softmax on it, the translation model an
encoder on one body and attention on the decoder's. `BodyDecoder` is the decoder
side that those heads share: incremental state, beam reordering, softmax.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import FairseqIncrementalDecoder
from torch import nn

from .embedding_dropout import embedding_dropout
from .dictionary_fingerprint import mark
from .errors import fail
from .locked_dropout import LockedDropout
from .split_softmax import SplitSoftmax, parse_cutoffs
from .tied_softmax import SoftmaxHead, TiedSoftmax
from .weight_drop import WeightDropLSTM


@dataclass
class AWDBodyConfig(FairseqDataclass):
    """The regularisation flags of every body in a model (defaults: the paper's PTB)."""
    dropout: float = field(
        default=0.4, metadata={"help": "locked dropout on the last LSTM layer's output"})
    hidden_dropout: float = field(
        default=0.25, metadata={"help": "locked dropout between LSTM layers"})
    input_dropout: float = field(
        default=0.4, metadata={"help": "locked dropout on the embedding output"})
    embed_dropout: float = field(
        default=0.1, metadata={"help": "embedding dropout: whole word types, rescaled"})
    weight_drop: float = field(
        default=0.5, metadata={"help": "DropConnect on each layer's hidden-to-hidden "
                                       "weights, one mask per forward"})
    untie_embeddings: bool = field(
        default=False, metadata={"help": "give the softmax its own weights instead of "
                                         "the (decoder's) embedding's (paper: tied)"})
    softmax_cutoffs: str = field(
        default="auto", metadata={"help": "split softmax for large vocabularies "
                                          "(split_softmax.py): the word indices where the "
                                          "head and each tail end, e.g. 2800,20000,76000; "
                                          "auto: the reference's choice by vocabulary size "
                                          "(the full softmax up to 75,000 words); none: "
                                          "the full softmax"})


def check_config(cfg, sizes: List[str]):
    """One clear line for settings that cannot build a model."""
    for name in ("dropout", "hidden_dropout", "input_dropout", "embed_dropout", "weight_drop"):
        p = getattr(cfg, name)
        if not 0 <= p < 1:
            fail(f"--{name.replace('_', '-')} must be in [0, 1), got {p}")
    for name in sizes:
        if getattr(cfg, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")


def embedding(dictionary, dim: int, path: str) -> nn.Embedding:
    """A word embedding initialised as the reference's: uniform in +-0.1, with the
    fingerprint of its dictionary (read from `path`)."""
    embed = nn.Embedding(len(dictionary), dim, dictionary.pad())
    nn.init.uniform_(embed.weight, -0.1, 0.1)
    return mark(embed, dictionary, path)


class AWDLSTMBody(nn.Module):
    def __init__(self, cfg: AWDBodyConfig, embed_tokens: nn.Embedding, sizes: List[int],
                 bidirectional: bool = False):
        """sizes: the first layer's input size (the embedding size, plus what a
        decoder feeds back beside it), then each layer's hidden size."""
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_dropout = cfg.embed_dropout
        layers, in_size = [], sizes[0]
        for hidden in sizes[1:]:
            layers.append(WeightDropLSTM(in_size, hidden, cfg.weight_drop, bidirectional))
            in_size = layers[-1].output_size
        self.layers = nn.ModuleList(layers)
        self.output_size = in_size
        self.input_drop = LockedDropout(cfg.input_dropout)
        self.hidden_drop = LockedDropout(cfg.hidden_dropout)
        self.output_drop = LockedDropout(cfg.dropout)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, time) tokens -> (time, batch, dim) inputs of the first layer, after
        embedding dropout and the input's locked dropout."""
        x = embedding_dropout(self.embed_tokens, tokens.t(), self.embed_dropout, self.training)
        return self.input_drop(x)

    def forward(self, tokens: torch.Tensor, state: Optional[list] = None,
                lengths: Optional[torch.Tensor] = None):
        """tokens: (batch, time), right-padded if `lengths` is given.
        Returns the last layer's output before and after its dropout, both
        (time, batch, output_size), and each layer's final (h, c)."""
        x = self.embed(tokens)
        new_state = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = self.hidden_drop(x)
            x, layer_state = layer(x, state[i] if state is not None else None, lengths)
            new_state.append(layer_state)
        return x, self.output_drop(x), new_state


class BodyDecoder(FairseqIncrementalDecoder):
    """A decoder on an AWDLSTMBody (`self.body`) with a head tied to its embedding
    (`self.softmax`, a SoftmaxHead): the full softmax, or split for a large
    vocabulary, whose training never builds the logits (the decoder then returns its
    features, as fairseq's adaptive-softmax decoders do), or a model's own."""

    def __init__(self, dictionary, body: AWDLSTMBody, out_dim: int, cfg: AWDBodyConfig,
                 softmax: Optional[SoftmaxHead] = None):
        """softmax: a head of the decoder's own; by default the tied softmax, split by
        --softmax-cutoffs."""
        super().__init__(dictionary)
        self.body = body
        if softmax is None:
            vocab, tied = len(dictionary), not cfg.untie_embeddings
            cutoffs = parse_cutoffs(cfg.softmax_cutoffs, vocab)
            softmax = (SplitSoftmax(vocab, out_dim, cutoffs, tied) if cutoffs
                       else TiedSoftmax(vocab, out_dim, tied))
        self.softmax = softmax

    def load_state(self, incremental_state):
        """Each layer's (h, c) cached after the previous token, and the whole cache
        (for a decoder's own entries); (None, None) before the first token."""
        saved = None
        if incremental_state is not None:
            saved = self.get_incremental_state(incremental_state, "state")
        if saved is None:
            return None, None
        return [(saved[f"h{i}"], saved[f"c{i}"]) for i in range(len(self.body.layers))], saved

    def save_state(self, incremental_state, state, **extra):
        """Cache each layer's (h, c) and a decoder's extra tensors, all (1, batch, dim):
        reorder_incremental_state follows the beam along their batch dimension."""
        saved = dict(extra)
        for i, (h, c) in enumerate(state):
            saved[f"h{i}"], saved[f"c{i}"] = h, c
        self.set_incremental_state(incremental_state, "state", saved)

    def run_body(self, tokens, incremental_state=None, state=None):
        """The body on the tokens; with incremental_state, on the newest token only,
        from the state cached after the previous one."""
        cached, _ = self.load_state(incremental_state)
        if cached is not None:
            tokens, state = tokens[:, -1:], cached
        raw, dropped, new_state = self.body(tokens, state)
        if incremental_state is not None:
            self.save_state(incremental_state, new_state)
        return raw, dropped, new_state

    def reorder_incremental_state(self, incremental_state, new_order):
        saved = self.get_incremental_state(incremental_state, "state")
        if saved is not None:
            saved = {k: v.index_select(1, new_order) for k, v in saved.items()}
            self.set_incremental_state(incremental_state, "state", saved)

    def scores(self, features, features_only: bool):
        """What forward returns: the head's output, or the features if asked."""
        return features if features_only else self.output_layer(features)

    def output_layer(self, features):
        return self.softmax(features, self.body.embed_tokens.weight)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        lprobs = self.softmax.log_probs(net_output[0], self.body.embed_tokens.weight)
        return lprobs if log_probs else lprobs.exp()

    def nll(self, net_output, target, ignore_index: int = -100):
        """The summed negative log-likelihood of the targets (fp32), positions whose
        target is `ignore_index` left out; split: no tail's softmax at a position
        whose target is not in it."""
        return self.softmax.nll(net_output[0], target, self.body.embed_tokens.weight,
                                ignore_index)

    def max_positions(self):
        return int(1e6)  # a recurrent model has no length limit
