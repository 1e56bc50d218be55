"""The AWD-LSTM language model (Merity, Keskar & Socher 2017).

A stack of weight-dropped LSTMs (section 2) between an embedding with embedding
dropout (4.3) and a softmax whose weights are tied to the embedding (4.4), with
locked dropout (4.2) on the embedding output, between layers and on the output.
Defaults are the paper's Penn Treebank model; `awd_lstm_wt2` is WikiText-2's.
"""
import logging
from dataclasses import dataclass, field
from typing import Optional

from fairseq.models import FairseqLanguageModel, register_model, register_model_architecture
from torch import nn

from .awd_lstm_body import AWDBodyConfig, AWDLSTMBody, BodyDecoder, check_config, embedding
from .carried_state import CarriedState
from .checkpoint_settings import check_settings
from .dictionary_fingerprint import check_dictionaries, dictionary_path
from .nt_asgd import follow_validation
from .stream import TRAIN_STREAM, Stream

logger = logging.getLogger(__name__)


@dataclass
class AWDLSTMConfig(AWDBodyConfig):
    decoder_embed_dim: int = field(default=400, metadata={"help": "word embedding size"})
    decoder_hidden_size: int = field(
        default=1150, metadata={"help": "LSTM hidden size (the last layer's is the "
                                        "embedding size while weights are tied)"})
    decoder_layers: int = field(default=3, metadata={"help": "number of LSTM layers"})


class AWDLSTMDecoder(BodyDecoder):
    """The AWD-LSTM body with a tied softmax, carrying its state between batches."""

    # What variable_bptt_lm needs of a model: forward(tokens, stream=Stream) carries
    # the LSTM state per stream, and its extra output holds "raw_out", the last
    # layer's outputs before dropout (the cache pointer's keys).
    carries_streams = True

    def __init__(self, cfg: AWDLSTMConfig, dictionary, dictionary_path: str = "dict.txt",
                 last_size: Optional[int] = None, softmax: Optional[nn.Module] = None):
        """last_size, softmax: another last layer size and head (awd_lstm_mos.py)."""
        tied = not cfg.untie_embeddings
        embed_dim, hidden = cfg.decoder_embed_dim, cfg.decoder_hidden_size
        sizes = [embed_dim] + [hidden] * (cfg.decoder_layers - 1)
        sizes.append(last_size or (embed_dim if tied else hidden))
        body = AWDLSTMBody(cfg, embedding(dictionary, embed_dim, dictionary_path), sizes)
        super().__init__(dictionary, body, sizes[-1], cfg, softmax)
        self.carried = CarriedState()

    def reset_state(self, stream: Optional[str] = None):
        """Forget the carried LSTM state of one stream, or of all."""
        self.carried.reset(stream)

    def forward(self, prev_output_tokens, incremental_state=None, features_only=False,
                stream: Optional[Stream] = None, **unused):
        """prev_output_tokens: (batch, time). `stream` names the token stream this
        batch continues, as the variable_bptt_lm task sets it. Without it, training
        follows on from the previous batch and evaluation starts every batch from
        zeros."""
        x, extra = self.extract_features(prev_output_tokens, incremental_state, stream)
        return self.scores(x, features_only), extra

    def extract_features(self, tokens, incremental_state=None, stream=None):
        # The state carried in: the stream's, or training's own; none for generation
        # (its state is in incremental_state) or evaluation without a stream.
        name, offset = (stream.name, stream.offset) if stream else (TRAIN_STREAM, None)
        carry = incremental_state is None and (stream is not None or self.training)
        state = self.carried.get(name, offset, tokens.size(0)) if carry else None
        raw, dropped, new_state = self.run_body(tokens, incremental_state, state)
        if carry and (stream is None or stream.commit):
            self.carried.put(name, offset, tokens.size(1), new_state)
        # (batch, time, features), the layout of fairseq's decoders.
        dropped, raw = dropped.transpose(0, 1), raw.transpose(0, 1)
        return dropped, {"attn": None, "raw_out": raw, "dropped_out": dropped}

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints of 0.1.0 kept the body's and the softmax's parameters on the
        decoder itself."""
        prefix = f"{name}." if name else ""
        for key in list(state_dict):
            for old, new in RENAMED_IN_0_2.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        return state_dict


RENAMED_IN_0_2 = {"embed_tokens.": "body.embed_tokens.", "layers.": "body.layers.",
                  "output_projection": "softmax.weight", "output_bias": "softmax.bias"}


@register_model("awd_lstm", dataclass=AWDLSTMConfig)
class AWDLSTMModel(FairseqLanguageModel):
    decoder_class = AWDLSTMDecoder
    sizes = ["decoder_embed_dim", "decoder_hidden_size", "decoder_layers"]

    @classmethod
    def build_model(cls, cfg, task):
        check_config(cfg, cls.sizes)
        if not getattr(task, "carries_lstm_state", False):
            logger.warning(
                f"awd_lstm under {type(task).__name__}: batches are not one continuous "
                "stream, so evaluation starts each block from a zero LSTM state; for the "
                "paper's training and perplexity use --task variable_bptt_lm")
        decoder = cls.decoder_class(cfg, task.target_dictionary, dictionary_path(task))
        return follow_validation(cls(decoder))

    def reset_state(self, stream: Optional[str] = None):
        self.decoder.reset_state(stream)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        self.upgrade_state_dict(state_dict)
        check_settings(self, state_dict, model_cfg)
        check_dictionaries(self, state_dict)
        return super().load_state_dict(state_dict, strict, model_cfg, args)


@register_model_architecture("awd_lstm", "awd_lstm_wt2")
def awd_lstm_wt2(args):
    """The reference README's WikiText-2 settings."""
    args.input_dropout = getattr(args, "input_dropout", 0.65)
    args.hidden_dropout = getattr(args, "hidden_dropout", 0.2)
