"""What only a GPU shows (skipped without CUDA): cuDNN's weight layout, the fused
kernel against nn.LSTM, mixed precision with nt_asgd, eval-lm on the GPU against
the CPU, a cache pointer that never waits for the GPU."""
import re
import sys
import warnings

import pytest
import torch

from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder
from fairseq_awd.cache_pointer import CachePointer
from fairseq_awd.weight_drop import WeightDropLSTM

from conftest import ENV, GPU_ENV, USER_DIR, run, small_dictionary

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = ["--user-dir", USER_DIR, "--task", "variable_bptt_lm", "--bptt", "20",
        "--batch-size", "4", "--seed", "7", "--arch", "awd_lstm", "--decoder-embed-dim", "32",
        "--decoder-hidden-size", "64", "--criterion", "ar_tar_cross_entropy",
        "--optimizer", "nt_asgd", "--lr", "30", "--clip-norm", "0.25",
        "--no-epoch-checkpoints", "--log-format", "simple"]


def test_cudnn_finds_the_dropped_weights_in_one_chunk():
    """cuDNN warns (and copies the weights every call) when they are not one block."""
    decoder = AWDLSTMDecoder(AWDLSTMConfig(decoder_embed_dim=16, decoder_hidden_size=32),
                             small_dictionary()).cuda().train()
    tokens = torch.randint(4, 50, (3, 7), device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder(tokens)[0].sum().backward()
        decoder.eval()
        decoder(tokens)
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]


def test_weight_drop_trains_as_nn_lstm_with_the_same_masked_weight():
    lstm = WeightDropLSTM(5, 8, weight_drop=0.5).cuda().train()
    x = torch.randn(6, 2, 5, device="cuda")
    torch.manual_seed(3)
    out, (h, c) = lstm(x)
    torch.manual_seed(3)  # the same mask, drawn again
    w_ih, w_hh, b_ih, b_hh = (w.detach() for w in lstm.flat_weights())
    ref = torch.nn.LSTM(5, 8).cuda()
    with torch.no_grad():
        for name, w in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                           (w_ih, w_hh, b_ih, b_hh)):
            getattr(ref, name).copy_(w)
    ref_out, (ref_h, ref_c) = ref(x)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(c, ref_c, atol=1e-5)
    (out.sum() + c.sum()).backward()
    (ref_out.sum() + ref_c.sum()).backward()
    mask = (w_hh != 0).float() * 2  # kept entries are scaled by 1 / (1 - 0.5)
    assert torch.allclose(lstm.weight_hh_raw.grad, ref.weight_hh_l0.grad * mask, atol=1e-5)
    assert torch.allclose(lstm.weight_ih.grad, ref.weight_ih_l0.grad, atol=1e-5)


@pytest.mark.parametrize("precision", [[], ["--amp"], ["--fp16", "--fp16-no-flatten-grads"],
                                       ["--fp16"]])
def test_gpu_training_with_nt_asgd_switches_in_each_precision(data_bin, tmp_path, precision):
    # validations every 10 updates: one that does not improve comes early (on the CPU
    # the third one; 3 epochs with one validation each did not switch on an H200)
    log = run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), *TINY, "--nonmono",
              "0", "--validate-interval-updates", "10", "--max-update", "200", "--save-dir",
              str(tmp_path / "ck"), *precision, cwd=tmp_path, env=GPU_ENV)
    assert "NT-ASGD: switching to averaged SGD" in log
    assert re.search(r"rank\s+0: capabilities =\s+\d", log)  # fairseq's GPU line
    ckpt = torch.load(tmp_path / "ck" / "checkpoint_last.pt")
    state = ckpt["last_optimizer_state"]["state"]
    assert state[0]["ax"].dtype == torch.float32 and state[0]["ax"].isfinite().all()


@pytest.mark.parametrize("extra", [[], ["--cache-window", "30"],
                                   ["--dynamic-eval", "--dynamic-eval-stats-batches", "3"]])
def test_eval_lm_on_the_gpu_equals_the_cpu(data_bin, tmp_path, extra):
    """Dynamic evaluation takes gradients through cuDNN in eval mode (weight_drop.py)."""
    run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), *TINY, "--max-epoch", "1",
        "--cpu", "--save-dir", str(tmp_path / "ck"), cwd=tmp_path)
    scores = []
    for device, env in ((["--cpu"], ENV), ([], GPU_ENV)):
        out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir",
                  USER_DIR, "--task", "variable_bptt_lm", "--bptt", "20", "--path",
                  str(tmp_path / "ck" / "checkpoint_best.pt"), *device, *extra, cwd=tmp_path,
                  env=env)
        scores.append(float(re.search(r"Loss \(base 2\): ([\d.]+)", out).group(1)))
    cpu, gpu = scores
    assert abs(gpu - cpu) <= 1e-4 * cpu + 5e-5, scores  # printed to 4 decimals


def test_the_cache_pointer_never_waits_for_the_gpu():
    """Its words stay on the host: torch raises on any synchronising call (e.g.
    torch.unique of GPU words, whose size the host must wait for)."""
    torch.manual_seed(0)
    n, eval_bptt = 100, 40
    lprobs, h = torch.randn(n, 50).log_softmax(-1), torch.randn(n, 8)
    tokens = torch.randint(4, 20, (n,))
    on_cpu, on_gpu = CachePointer(30, 0.8, 0.3), CachePointer(30, 0.8, 0.3)
    for offset in range(0, n, eval_bptt):
        window = slice(offset, offset + eval_bptt)
        expected = on_cpu.log_probs(lprobs[window], h[window], tokens[window])
        lp, hidden = lprobs[window].cuda(), h[window].cuda()
        torch.cuda.set_sync_debug_mode("error")
        try:
            mixed = on_gpu.log_probs(lp, hidden, tokens[window])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.allclose(mixed.cpu(), expected, atol=1e-5)


def test_mos_trains_with_amp_and_evaluates_on_the_gpu(data_bin, tmp_path):
    mos = [("awd_lstm_mos" if a == "awd_lstm" else a) for a in TINY]
    log = run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), *mos,
              "--decoder-last-hidden-size", "24", "--n-experts", "3", "--max-epoch", "2",
              "--amp", "--save-dir", str(tmp_path / "ck"), cwd=tmp_path, env=GPU_ENV)
    assert re.search(r"rank\s+0: capabilities =\s+\d", log)
    losses = [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)]
    assert len(losses) == 2 and losses[1] < losses[0]
    out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir",
              USER_DIR, "--task", "variable_bptt_lm", "--path",
              str(tmp_path / "ck" / "checkpoint_best.pt"), cwd=tmp_path, env=GPU_ENV)
    vocab = len((data_bin / "dict.txt").read_text().splitlines()) + 4
    assert float(re.search(r"Perplexity: ([\d.]+)", out).group(1)) < vocab  # below uniform
