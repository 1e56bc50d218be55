"""AWD-LSTM for translation: the paper's regularisation carried to an LSTM
encoder-decoder with attention (Merity et al. 2017 apply it to language models).

Encoder and decoder are each an AWD-LSTM body (awd_lstm_body.py): embedding
dropout, locked dropout on the input, between layers and on the output, weight
drop on every recurrent matrix. The encoder runs its padded batch packed, so
padding never reaches its state; the decoder's last layer, after its output
dropout, attends over the encoder's outputs (Luong et al. 2015's "general"
score, as fairseq's `lstm` AttentionLayer) and the result goes through a softmax
tied to the decoder's input embedding (section 4.4).
"""
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel, register_model
from torch import nn

from .awd_lstm_body import AWDBodyConfig, AWDLSTMBody, BodyDecoder, check_config, embedding
from .dictionary_fingerprint import check_dictionaries, dictionary_path
from .errors import fail
from .nt_asgd import follow_validation

SIZES = ["encoder_embed_dim", "encoder_hidden_size", "encoder_layers", "decoder_embed_dim",
         "decoder_hidden_size", "decoder_layers", "decoder_out_embed_dim"]


@dataclass
class AWDLSTMTranslationConfig(AWDBodyConfig):
    encoder_embed_dim: int = field(default=256, metadata={"help": "encoder embedding size"})
    encoder_hidden_size: int = field(default=512, metadata={"help": "encoder hidden size"})
    encoder_layers: int = field(default=2, metadata={"help": "number of encoder layers"})
    encoder_bidirectional: bool = field(
        default=False, metadata={"help": "make all layers of the encoder bidirectional"})
    decoder_embed_dim: int = field(default=256, metadata={"help": "decoder embedding size"})
    decoder_hidden_size: int = field(default=512, metadata={"help": "decoder hidden size"})
    decoder_layers: int = field(default=2, metadata={"help": "number of decoder layers"})
    decoder_out_embed_dim: int = field(
        default=256, metadata={"help": "size of the attention output that the softmax reads "
                                       "(the decoder embedding size while tied)"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one embedding for source, target and softmax "
                                         "(needs a joined dictionary)"})


class AWDLSTMEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary, embed_tokens):
        super().__init__(dictionary)
        sizes = [cfg.encoder_embed_dim] + [cfg.encoder_hidden_size] * cfg.encoder_layers
        self.body = AWDLSTMBody(cfg, embed_tokens, sizes, cfg.encoder_bidirectional)

    def forward(self, src_tokens, src_lengths=None, **unused):
        """Returns the last layer's output after its dropout (src_len, batch, dim) and
        the padding mask (src_len, batch), both right-padded."""
        pad = self.dictionary.pad()
        # fairseq's translation task pads sources on the left; packing needs the right.
        src_tokens = utils.convert_padding_direction(src_tokens, pad, left_to_right=True)
        padding = src_tokens.eq(pad)
        # packing reads the lengths on the CPU: move them once, not once per layer
        _, out, _ = self.body(src_tokens, lengths=(~padding).sum(1).cpu())
        return {"encoder_out": out, "padding_mask": padding.t()}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: v.index_select(1, new_order) for k, v in encoder_out.items()}

    def max_positions(self):
        return int(1e6)


class Attention(nn.Module):
    """Luong et al. 2015's general attention, output tanh(W [context; query])."""

    def __init__(self, query_dim, source_dim, out_dim):
        super().__init__()
        self.input_proj = nn.Linear(query_dim, source_dim, bias=False)
        self.output_proj = nn.Linear(source_dim + query_dim, out_dim, bias=False)

    def forward(self, query, source, padding_mask):
        """query (tgt, batch, q), source (src, batch, s), padding_mask (src, batch) ->
        output (tgt, batch, out), weights (batch, tgt, src)."""
        scores = torch.einsum("tbd,sbd->bts", self.input_proj(query), source)
        scores = scores.masked_fill(padding_mask.t().unsqueeze(1), float("-inf"))
        weights = scores.float().softmax(-1).type_as(scores)
        context = torch.einsum("bts,sbd->tbd", weights, source)
        return torch.tanh(self.output_proj(torch.cat([context, query], -1))), weights


class AWDLSTMTranslationDecoder(BodyDecoder):
    def __init__(self, cfg, dictionary, embed_tokens, source_dim):
        sizes = [cfg.decoder_embed_dim] + [cfg.decoder_hidden_size] * cfg.decoder_layers
        body = AWDLSTMBody(cfg, embed_tokens, sizes)
        super().__init__(dictionary, body, cfg.decoder_out_embed_dim, not cfg.untie_embeddings)
        self.attention = Attention(cfg.decoder_hidden_size, source_dim, cfg.decoder_out_embed_dim)

    def forward(self, prev_output_tokens, encoder_out, incremental_state=None,
                features_only=False, **unused):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return (x if features_only else self.output_layer(x)), extra

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None,
                         **unused):
        raw, dropped, _ = self.run_body(prev_output_tokens, incremental_state)
        x, attn = self.attention(dropped, encoder_out["encoder_out"],
                                 encoder_out["padding_mask"])
        # (batch, time, features), the layout of fairseq's decoders.
        return x.transpose(0, 1), {"attn": attn, "raw_out": raw.transpose(0, 1),
                                   "dropped_out": dropped.transpose(0, 1)}


@register_model("awd_lstm_translation", dataclass=AWDLSTMTranslationConfig)
class AWDLSTMTranslationModel(FairseqEncoderDecoderModel):
    @classmethod
    def build_model(cls, cfg, task):
        check_config(cfg, SIZES)
        if not cfg.untie_embeddings and cfg.decoder_out_embed_dim != cfg.decoder_embed_dim:
            fail(f"a tied softmax needs --decoder-out-embed-dim ({cfg.decoder_out_embed_dim}) "
                 f"= --decoder-embed-dim ({cfg.decoder_embed_dim}): make them equal, or add "
                 "--untie-embeddings")
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        encoder_embed = embedding(src_dict, cfg.encoder_embed_dim,
                                  dictionary_path(task, "source_lang"))
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                fail("--share-all-embeddings needs one dictionary for both languages: "
                     "preprocess with --joined-dictionary")
            if cfg.encoder_embed_dim != cfg.decoder_embed_dim:
                fail("--share-all-embeddings needs --encoder-embed-dim = --decoder-embed-dim")
            decoder_embed = encoder_embed
        else:
            decoder_embed = embedding(tgt_dict, cfg.decoder_embed_dim,
                                      dictionary_path(task, "target_lang"))
        encoder = AWDLSTMEncoder(cfg, src_dict, encoder_embed)
        decoder = AWDLSTMTranslationDecoder(cfg, tgt_dict, decoder_embed,
                                            encoder.body.output_size)
        return follow_validation(cls(encoder, decoder))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        check_dictionaries(self, state_dict)
        return super().load_state_dict(state_dict, strict, model_cfg, args)
