"""AWD-LSTM for translation: the paper's regularisation carried to an LSTM
encoder-decoder with attention (Merity et al. 2017 apply it to language models).

The architecture is fairseq's `lstm` (Luong et al. 2015): the decoder starts from
the encoder's final (h, c) of each layer (both directions concatenated, projected
when the sizes differ), its first layer reads the previous step's attention output
beside the embedding (input feeding), and the top layer's hidden state, before any
dropout, queries the attention. Encoder and decoder are each an AWD-LSTM body
(awd_lstm_body.py): embedding dropout, locked dropout on the input, between layers
and on the output (the decoder's: the attention output, fed back and read by the
softmax), weight drop on every recurrent matrix. Input feeding makes the decoder
step token by token; it draws its weight-drop and locked-dropout masks once per
forward and reuses them at every step, as the language model does over a sequence.
The softmax is tied to the decoder's input embedding (section 4.4).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel, register_model
from torch import nn

from .awd_lstm_body import AWDBodyConfig, AWDLSTMBody, BodyDecoder, check_config, embedding
from .checkpoint_settings import check_settings
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
    decoder_layers: int = field(
        default=2, metadata={"help": "number of decoder layers (= --encoder-layers: each "
                                     "starts from the encoder layer's final state)"})
    decoder_out_embed_dim: int = field(
        default=256, metadata={"help": "size of what the softmax reads: the attention output, "
                                       "projected when it differs from the hidden size (the "
                                       "decoder embedding size while tied)"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one embedding for source, target and softmax "
                                         "(needs a joined dictionary)"})


class AWDLSTMEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary, embed_tokens):
        super().__init__(dictionary)
        sizes = [cfg.encoder_embed_dim] + [cfg.encoder_hidden_size] * cfg.encoder_layers
        self.body = AWDLSTMBody(cfg, embed_tokens, sizes, cfg.encoder_bidirectional)

    def forward(self, src_tokens, src_lengths=None, **unused):
        """Returns the last layer's output after its dropout (src_len, batch, dim), the
        padding mask (src_len, batch), both right-padded, and each layer's final h and
        c (layers, batch, dim), the directions concatenated."""
        pad = self.dictionary.pad()
        # fairseq's translation task pads sources on the left; packing needs the right.
        src_tokens = utils.convert_padding_direction(src_tokens, pad, left_to_right=True)
        padding = src_tokens.eq(pad)
        # packing reads the lengths on the CPU: move them once, not once per layer
        _, out, state = self.body(src_tokens, lengths=(~padding).sum(1).cpu())
        final_h, final_c = (torch.stack([torch.cat(list(s[k]), -1) for s in state])
                            for k in (0, 1))
        return {"encoder_out": out, "padding_mask": padding.t(), "final_h": final_h,
                "final_c": final_c}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: v.index_select(1, new_order) for k, v in encoder_out.items()}

    def max_positions(self):
        return int(1e6)


class Attention(nn.Module):
    """Luong et al. 2015's general attention for one decoder step, as fairseq's
    `lstm`: output tanh(W [context; query])."""

    def __init__(self, query_dim, source_dim, out_dim):
        super().__init__()
        self.input_proj = nn.Linear(query_dim, source_dim, bias=False)
        self.output_proj = nn.Linear(source_dim + query_dim, out_dim, bias=False)

    @staticmethod
    def padding_bias(padding_mask, like):
        """(batch, src, 1): -inf at padding, 0 elsewhere; made once per forward, added
        to the scores by the product that computes them."""
        return like.new_zeros(padding_mask.shape + (1,)).masked_fill_(
            padding_mask.unsqueeze(2), float("-inf"))

    def forward(self, query, source, padding_bias):
        """query (batch, q), source (batch, src, s), padding_bias (batch, src, 1) ->
        output (batch, out), weights (batch, src)."""
        scores = torch.baddbmm(padding_bias, source, self.input_proj(query).unsqueeze(2))
        weights = scores.squeeze(2).float().softmax(-1).type_as(query)
        context = torch.bmm(weights.unsqueeze(1), source).squeeze(1)
        return torch.tanh(self.output_proj(torch.cat([context, query], 1))), weights


def lstm_step(gates, c):
    """An LSTM cell's update from its summed gate pre-activations (torch's order i, f,
    g, o): the first layer adds its input products itself (see `extract_features`)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class AWDLSTMTranslationDecoder(BodyDecoder):
    def __init__(self, cfg, dictionary, embed_tokens, source_dim):
        hidden = cfg.decoder_hidden_size
        # input feeding: the first layer reads the embedding and the last attention output
        sizes = [cfg.decoder_embed_dim + hidden] + [hidden] * cfg.decoder_layers
        body = AWDLSTMBody(cfg, embed_tokens, sizes)
        super().__init__(dictionary, body, cfg.decoder_out_embed_dim, cfg)
        # the bridge from the encoder's final states, where the sizes differ
        self.hidden_proj = self.cell_proj = None
        if source_dim != hidden:
            self.hidden_proj = nn.Linear(source_dim, hidden)
            self.cell_proj = nn.Linear(source_dim, hidden)
        self.attention = Attention(hidden, source_dim, hidden)
        self.out_proj = None
        if cfg.decoder_out_embed_dim != hidden:
            self.out_proj = nn.Linear(hidden, cfg.decoder_out_embed_dim)

    def forward(self, prev_output_tokens, encoder_out, incremental_state=None,
                features_only=False, **unused):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return self.scores(x, features_only), extra

    def initial_state(self, encoder_out):
        """Each layer's (h, c) and the fed-back vector before the first target token."""
        hs, cs = list(encoder_out["final_h"]), list(encoder_out["final_c"])
        if self.hidden_proj is not None:
            hs, cs = [self.hidden_proj(h) for h in hs], [self.cell_proj(c) for c in cs]
        return hs, cs, hs[0].new_zeros(hs[0].shape)

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None,
                         **unused):
        body, layers = self.body, self.body.layers
        cached, saved = self.load_state(incremental_state)
        if cached is None:
            hs, cs, feed = self.initial_state(encoder_out)
        else:  # generation: the newest token, from the state after the previous one
            prev_output_tokens = prev_output_tokens[:, -1:]
            hs, cs = [h[0] for h, _ in cached], [c[0] for _, c in cached]
            feed = saved["feed"][0]
        x = body.embed(prev_output_tokens)
        # one weight-drop mask per layer and one locked-dropout mask per place, drawn
        # once for the whole forward and reused at every step
        weights = [layer.flat_weights() for layer in layers]
        hidden_masks = [body.hidden_drop.mask(h) for h in hs[:-1]]
        out_mask = body.output_drop.mask(feed)
        # the embedding's share of the first layer's gates, every position in one
        # product; per step, the fed-back vector and h in one more
        w_ih, w_hh, b_ih, b_hh = weights[0]
        embed_dim = x.size(-1)
        embed_gates = F.linear(x, w_ih[:, :embed_dim], b_ih + b_hh)
        w_step = torch.cat([w_ih[:, embed_dim:], w_hh], 1).t()
        source = encoder_out["encoder_out"].transpose(0, 1)  # (batch, src, dim) for bmm
        padding = Attention.padding_bias(encoder_out["padding_mask"].t(), source)
        raw, dropped, attn = [], [], []
        for t in range(x.size(0)):
            hs[0], cs[0] = lstm_step(torch.addmm(embed_gates[t], torch.cat([feed, hs[0]], 1),
                                                 w_step), cs[0])
            for i, mask in enumerate(hidden_masks, 1):
                below = hs[i - 1] if mask is None else hs[i - 1] * mask
                hs[i], cs[i] = torch.lstm_cell(below, (hs[i], cs[i]), *weights[i])
            out, scores = self.attention(hs[-1], source, padding)
            feed = out if out_mask is None else out * out_mask
            raw.append(hs[-1])
            dropped.append(feed)
            attn.append(scores)
        if incremental_state is not None:
            self.save_state(incremental_state, [(h[None], c[None]) for h, c in zip(hs, cs)],
                            feed=feed[None])
        # (batch, time, features), the layout of fairseq's decoders
        raw, dropped = torch.stack(raw, 1), torch.stack(dropped, 1)
        features = dropped if self.out_proj is None else self.out_proj(dropped)
        return features, {"attn": torch.stack(attn, 1), "raw_out": raw, "dropped_out": dropped}


@register_model("awd_lstm_translation", dataclass=AWDLSTMTranslationConfig)
class AWDLSTMTranslationModel(FairseqEncoderDecoderModel):
    @classmethod
    def build_model(cls, cfg, task):
        check_config(cfg, SIZES)
        if cfg.encoder_layers != cfg.decoder_layers:
            fail(f"--encoder-layers ({cfg.encoder_layers}) must equal --decoder-layers "
                 f"({cfg.decoder_layers}): each decoder layer starts from the final state of "
                 "the encoder layer at its depth, as in fairseq's lstm")
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
        check_settings(self, state_dict, model_cfg)
        check_dictionaries(self, state_dict)
        return super().load_state_dict(state_dict, strict, model_cfg, args)
