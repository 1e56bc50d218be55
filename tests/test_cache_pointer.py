"""The neural cache pointer against a per-token loop written plainly, and the
reference's pointer.py method (one-hot history, scripts/benchmark.py's baseline)
against that loop."""
import pytest
import torch

from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from fairseq_awd.cache_pointer import CachePointer
from fairseq_awd.evaluation import CacheSettings, EvalLM
from fairseq_awd.stream import Stream

from cache_oracle import one_hot_loop, per_token_cache
from conftest import small_dictionary

WINDOW, THETA, LAM, BPTT = 7, 0.8, 0.3, 10


def decoder():
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12)
    return AWDLSTMModel(AWDLSTMDecoder(cfg, small_dictionary(30))).eval()


def cached_scores(model, tokens, window=WINDOW):
    """Log-probability of each next token as fairseq-eval-lm gets it: windows of BPTT,
    the state and the cache carried along the stream."""
    evaluator = EvalLM(model, cache=CacheSettings(window, THETA, LAM))
    scores = []
    with torch.no_grad():
        for offset in range(0, len(tokens) - 1, BPTT):
            src = tokens[offset : offset + BPTT][: len(tokens) - 1 - offset]
            out = evaluator(src[None], stream=Stream("test", offset))
            lprobs = evaluator.get_normalized_probs(out, log_probs=True)[0]  # the scorer's
            target = tokens[offset + 1 : offset + 1 + len(src)]
            scores.append(lprobs.gather(1, target[:, None])[:, 0])
    return torch.cat(scores)


def plain_loop(model, tokens, window=WINDOW):
    with torch.no_grad():
        logits, extra = model(tokens[None, :-1])
    return per_token_cache(logits[0].softmax(-1), extra["raw_out"][0], tokens, window, THETA,
                           LAM)


def test_cache_equals_the_per_token_loop():
    torch.manual_seed(0)
    model, tokens = decoder(), torch.randint(4, 12, (63,))  # few words: many repeats
    cached, plain = cached_scores(model, tokens), plain_loop(model, tokens)
    assert torch.allclose(cached, plain, atol=1e-5)
    with torch.no_grad():
        no_cache = model(tokens[None, :-1])[0][0].log_softmax(-1)
    base = no_cache.gather(1, tokens[1:, None])[:, 0]
    # the first WINDOW + 1 positions have no cache (the first token's is empty), and
    # the cache helps on a stream of repeated words
    assert torch.allclose(cached[: WINDOW + 1], base[: WINDOW + 1], atol=1e-5)
    assert cached[WINDOW + 1 :].mean() > base[WINDOW + 1 :].mean()


def test_the_benchmarks_one_hot_baseline_computes_the_same_scores():
    torch.manual_seed(0)
    model, tokens = decoder(), torch.randint(4, 12, (63,))
    with torch.no_grad():
        logits, extra = model(tokens[None, :-1])
    probs, h = logits[0].softmax(-1), extra["raw_out"][0]
    positions = range(WINDOW + 1, 40)
    assert torch.allclose(one_hot_loop(probs, h, tokens, WINDOW, THETA, LAM, positions),
                          per_token_cache(probs, h, tokens, WINDOW, THETA, LAM)[WINDOW + 1 : 40],
                          atol=1e-6)


def test_no_token_finds_its_own_target_in_its_cache():
    torch.manual_seed(1)
    model = decoder()
    tokens = torch.randint(4, 12, (40,))
    tokens[25] = 20  # a word seen nowhere before: position 24's target
    with torch.no_grad():
        base = model(tokens[None, :-1])[0][0].softmax(-1)[24, 20]
    cached = cached_scores(model, tokens)[24]
    assert torch.allclose(cached.exp(), (1 - LAM) * base, rtol=1e-5)


@pytest.mark.parametrize("window", [1, 9, 10, 11, 30])
def test_window_edges_are_exact(window):
    """Windows that end on, before and after an eval-window boundary (BPTT 10)."""
    torch.manual_seed(2)
    model, tokens = decoder(), torch.randint(4, 10, (45,))
    assert torch.allclose(cached_scores(model, tokens, window),
                          plain_loop(model, tokens, window), atol=1e-5)


def test_a_full_cache_builds_its_band_mask_once():
    """Past the fill, every eval window of one length has the same band of keys."""
    torch.manual_seed(3)
    cache = CachePointer(WINDOW, THETA, LAM)
    lprobs, h = torch.randn(40, 30).log_softmax(-1), torch.randn(40, 8)
    tokens = torch.arange(40) % 30
    built = []
    for offset in range(0, 40, BPTT):
        with torch.profiler.profile() as prof:
            cache.log_probs(*(t[offset : offset + BPTT] for t in (lprobs, h, tokens)))
        built.append([e.name for e in prof.events()].count("aten::tril_"))
    assert built == [1, 1, 0, 0]
