"""The AWD-LSTM language model (Merity, Keskar & Socher 2017).

A stack of weight-dropped LSTMs (section 2) between an embedding with embedding
dropout (4.3) and a softmax whose weights are tied to the embedding (4.4), with
locked dropout (4.2) on the embedding output, between layers and on the output.
Defaults are the paper's Penn Treebank model; `awd_lstm_wt2` is WikiText-2's.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq.dataclass import FairseqDataclass
from fairseq.models import (
    FairseqIncrementalDecoder,
    FairseqLanguageModel,
    register_model,
    register_model_architecture,
)
from torch import nn

from .carried_state import CarriedState
from .embedding_dropout import embedding_dropout
from .errors import fail
from .locked_dropout import LockedDropout
from .weight_drop import WeightDropLSTM

logger = logging.getLogger(__name__)


@dataclass
class AWDLSTMConfig(FairseqDataclass):
    decoder_embed_dim: int = field(default=400, metadata={"help": "word embedding size"})
    decoder_hidden_size: int = field(
        default=1150, metadata={"help": "LSTM hidden size (the last layer's is the "
                                        "embedding size while weights are tied)"})
    decoder_layers: int = field(default=3, metadata={"help": "number of LSTM layers"})
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
                                         "the embedding's (paper: tied)"})


def check_config(cfg):
    """One clear line for settings that cannot build a model."""
    for name in ("dropout", "hidden_dropout", "input_dropout", "embed_dropout", "weight_drop"):
        p = getattr(cfg, name)
        if not 0 <= p < 1:
            fail(f"--{name.replace('_', '-')} must be in [0, 1), got {p}")
    for name in ("decoder_embed_dim", "decoder_hidden_size", "decoder_layers"):
        if getattr(cfg, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")


class AWDLSTMDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg: AWDLSTMConfig, dictionary):
        super().__init__(dictionary)
        self.embed_dropout = cfg.embed_dropout
        self.tied = not cfg.untie_embeddings
        embed_dim, hidden = cfg.decoder_embed_dim, cfg.decoder_hidden_size
        self.embed_tokens = nn.Embedding(len(dictionary), embed_dim, dictionary.pad())
        nn.init.uniform_(self.embed_tokens.weight, -0.1, 0.1)
        sizes = [embed_dim] + [hidden] * (cfg.decoder_layers - 1)
        sizes.append(embed_dim if self.tied else hidden)
        self.layers = nn.ModuleList(
            WeightDropLSTM(i, o, cfg.weight_drop) for i, o in zip(sizes, sizes[1:]))
        self.input_drop = LockedDropout(cfg.input_dropout)
        self.hidden_drop = LockedDropout(cfg.hidden_dropout)
        self.output_drop = LockedDropout(cfg.dropout)
        self.output_projection = None
        if not self.tied:
            self.output_projection = nn.Parameter(torch.empty(len(dictionary), hidden))
            nn.init.uniform_(self.output_projection, -0.1, 0.1)
        self.output_bias = nn.Parameter(torch.zeros(len(dictionary)))
        self.carried = CarriedState()

    def reset_state(self, stream: Optional[str] = None):
        """Forget the carried LSTM state of one stream, or of all."""
        self.carried.reset(stream)

    def forward(self, prev_output_tokens, incremental_state=None, features_only=False,
                stream: Optional[Dict] = None, **unused):
        """prev_output_tokens: (batch, time). `stream` names the token stream this
        batch continues, as the variable_bptt_lm task sets it: {"name", "offset",
        "commit"}. Without it, training follows on from the previous batch and
        evaluation starts every batch from zeros."""
        x, extra = self.extract_features(prev_output_tokens, incremental_state, stream)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, tokens, incremental_state=None, stream=None):
        if incremental_state is not None:
            state = self._cached(incremental_state)
            if state is not None:
                tokens = tokens[:, -1:]
        elif stream is not None:
            state = self.carried.get(stream["name"], stream["offset"], tokens.size(0))
        elif self.training:
            state = self.carried.get("train", None, tokens.size(0))
        else:
            state = None

        x = embedding_dropout(self.embed_tokens, tokens.t(), self.embed_dropout, self.training)
        x = self.input_drop(x)
        new_state = []
        for i, layer in enumerate(self.layers):
            x, layer_state = layer(x, state[i] if state is not None else None)
            new_state.append(layer_state)
            if i < len(self.layers) - 1:
                x = self.hidden_drop(x)
        dropped = self.output_drop(x)

        if incremental_state is not None:
            self._cache(incremental_state, new_state)
        elif stream is not None:
            if stream.get("commit", True):
                self.carried.put(stream["name"], stream["offset"], tokens.size(1), new_state)
        elif self.training:
            self.carried.put("train", None, tokens.size(1), new_state)
        # (batch, time, features), the layout of fairseq's decoders.
        dropped, raw = dropped.transpose(0, 1), x.transpose(0, 1)
        return dropped, {"attn": None, "raw_out": raw, "dropped_out": dropped}

    def output_layer(self, features):
        weight = self.embed_tokens.weight if self.tied else self.output_projection
        return F.linear(features, weight, self.output_bias)

    def max_positions(self):
        return int(1e6)  # a recurrent model has no length limit

    def _cached(self, incremental_state):
        saved = self.get_incremental_state(incremental_state, "state")
        if saved is None:
            return None
        return [(saved[f"h{i}"], saved[f"c{i}"]) for i in range(len(self.layers))]

    def _cache(self, incremental_state, state):
        saved = {}
        for i, (h, c) in enumerate(state):
            saved[f"h{i}"], saved[f"c{i}"] = h, c
        self.set_incremental_state(incremental_state, "state", saved)

    def reorder_incremental_state(self, incremental_state, new_order):
        saved = self.get_incremental_state(incremental_state, "state")
        if saved is not None:
            saved = {k: v.index_select(1, new_order) for k, v in saved.items()}
            self.set_incremental_state(incremental_state, "state", saved)


@register_model("awd_lstm", dataclass=AWDLSTMConfig)
class AWDLSTMModel(FairseqLanguageModel):
    @classmethod
    def build_model(cls, cfg, task):
        check_config(cfg)
        if not getattr(task, "carries_lstm_state", False):
            logger.warning(
                f"awd_lstm under {type(task).__name__}: batches are not one continuous "
                "stream, so evaluation starts each block from a zero LSTM state; for the "
                "paper's training and perplexity use --task variable_bptt_lm")
        return cls(AWDLSTMDecoder(cfg, task.target_dictionary))

    def reset_state(self, stream: Optional[str] = None):
        self.decoder.reset_state(stream)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        rows = state_dict["decoder.embed_tokens.weight"].size(0)
        if rows != len(self.decoder.dictionary):
            fail(f"the checkpoint's dictionary has {rows} symbols, the data's "
                 f"{len(self.decoder.dictionary)}: use the data-bin (dict.txt) it was trained on")
        return super().load_state_dict(state_dict, strict, model_cfg, args)


@register_model_architecture("awd_lstm", "awd_lstm_wt2")
def awd_lstm_wt2(args):
    """The reference README's WikiText-2 settings."""
    args.input_dropout = getattr(args, "input_dropout", 0.65)
    args.hidden_dropout = getattr(args, "hidden_dropout", 0.2)
