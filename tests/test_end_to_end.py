"""fairseq-preprocess -> fairseq-train -> fairseq-eval-lm -> hub, on shipped data."""
import re
import sys

import pytest
import torch

from fairseq_awd.awd_lstm import AWDLSTMModel

from conftest import ROOT, USER_DIR, perplexity, run, run_two_ranks, valid_losses

pytestmark = pytest.mark.slow

TINY_MODEL = ["--arch", "awd_lstm", "--decoder-embed-dim", "32", "--decoder-hidden-size", "64",
              "--criterion", "ar_tar_cross_entropy"]


def dictionary_size(data_bin):
    return 4 + sum(1 for _ in open(data_bin / "dict.txt"))


def test_train_eval_lm_and_hub_on_language_modeling(data_bin, tmp_path):
    out = run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", USER_DIR,
              "--task", "language_modeling", "--tokens-per-sample", "35", *TINY_MODEL,
              "--optimizer", "nag", "--momentum", "0", "--lr", "30", "--clip-norm", "0.25",
              "--batch-size", "8", "--max-update", "40", "--cpu", "--seed", "1",
              "--save-dir", str(tmp_path / "ck"), "--no-epoch-checkpoints",
              "--log-format", "simple", cwd=tmp_path)
    assert "awd_lstm under LanguageModelingTask" in out
    assert re.search(r"valid on 'valid' subset \| loss [\d.]+ \| ar [\d.]+ \| tar [\d.]+", out)
    v = dictionary_size(data_bin)
    out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir", USER_DIR,
              "--path", str(tmp_path / "ck" / "checkpoint_best.pt"), "--cpu",
              "--tokens-per-sample", "35", "--batch-size", "4", cwd=tmp_path)
    ppl = perplexity(out)
    # 40 updates learn the unigram distribution: far below uniform, far above 1.
    assert 20 < ppl < v / 4, (ppl, v)
    # checkpoints hold plain values only: torch's default (weights_only) loader reads them
    torch.load(tmp_path / "ck" / "checkpoint_best.pt")

    lm = AWDLSTMModel.from_pretrained(str(tmp_path / "ck"), "checkpoint_best.pt",
                                      data_name_or_path=str(data_bin), user_dir=USER_DIR)
    text = lm.sample("the", beam=1, sampling=True, max_len_b=8)
    assert text.startswith("the") and len(text.split()) > 1
    scores = lm.score("the game was played")["positional_scores"]
    assert scores.shape == (4,) and (scores < 0).all()  # 3 next words + end of sentence


TASK = ["--task", "variable_bptt_lm", "--bptt", "20", "--batch-size", "4", "--seed", "7",
        "--optimizer", "nag", "--momentum", "0", "--lr", "30", "--clip-norm", "0.25",
        "--cpu", "--no-epoch-checkpoints", "--log-format", "simple"]


def train(data_bin, save_dir, *flags):
    return run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", USER_DIR,
               *TINY_MODEL, *TASK, "--save-dir", str(save_dir), *flags, cwd=save_dir.parent)


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("bptt") / "ck"
    log = train(data_bin, save_dir, "--max-epoch", "2")
    return save_dir, log


def test_eval_lm_scores_the_test_split_as_one_stream(data_bin, trained):
    from fairseq import checkpoint_utils

    save_dir, _ = trained
    out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir", USER_DIR,
              "--task", "variable_bptt_lm", "--bptt", "20", "--log-interval", "100",
              "--path", str(save_dir / "checkpoint_best.pt"), "--cpu", cwd=save_dir)
    ppl = perplexity(out)
    # progress while one stream is scored: a line every 100 windows (of 20 tokens)
    windows = re.findall(r"eval-lm: window ([\d,]+) of [\d,]+, ([\d,]+) tokens", out)
    assert [w for w, _ in windows][:2] == ["100", "200"], out[-2000:]
    assert windows[0][1] == "2,000"
    n_scored = int(re.search(r"Evaluated ([\d,]+) tokens", out).group(1).replace(",", ""))

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save_dir / "checkpoint_best.pt")], arg_overrides={"data": str(data_bin)})
    model = models[0].eval()
    task.load_dataset("test")
    tokens = task.dataset("test").tokens
    state, total = {}, 0.0
    with torch.no_grad():
        for t in range(len(tokens) - 1):
            out_t = model.decoder(tokens[None, : t + 1], incremental_state=state)
            lprobs = model.get_normalized_probs(out_t, log_probs=True)
            total -= lprobs[0, -1, tokens[t + 1]].item()
    assert n_scored == len(tokens) - 1  # fairseq divides by N-1 predictions
    manual = torch.exp(torch.tensor(total / (len(tokens) - 1), dtype=torch.float64)).item()
    assert ppl == pytest.approx(manual, rel=1e-4)


def test_eval_lm_with_the_cache_pointer_dynamic_evaluation_and_cache_tuning(data_bin, trained):
    save_dir, _ = trained
    ckpt = str(save_dir / "checkpoint_best.pt")

    def ppl(*flags):
        out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir",
                  USER_DIR, "--task", "variable_bptt_lm", "--path", ckpt, "--cpu", *flags,
                  cwd=save_dir)
        return perplexity(out)
    # a barely trained model: the cache of recent words and dynamic evaluation help a lot
    base = ppl()
    assert ppl("--cache-window", "100", "--cache-lambda", "0.1") < 0.95 * base
    assert ppl("--dynamic-eval", "--dynamic-eval-stats-batches", "20") < 0.95 * base
    out = run(sys.executable, str(ROOT / "scripts" / "tune_cache.py"), str(data_bin), ckpt,
              "--window", "100", "--thetas", "0.3,1.0", "--lambdas", "0.1,0.3", "--", "--cpu",
              cwd=save_dir)
    assert "[4/4] theta 1.0 lambda 0.3" in out
    table = {(float(t), float(l)): float(p) for t, l, p in re.findall(
        r"theta ([\d.]+) lambda ([\d.]+): perplexity ([\d.]+)", out)}
    best = min(table, key=table.get)
    assert f"best: --cache-theta {best[0]} --cache-lambda {best[1]}" in out


def test_hub_on_a_variable_bptt_checkpoint(data_bin, trained):
    save_dir, _ = trained
    lm = AWDLSTMModel.from_pretrained(str(save_dir), "checkpoint_best.pt",
                                      data_name_or_path=str(data_bin), user_dir=USER_DIR)
    assert type(lm.task).__name__ == "VariableBPTTLMTask"
    assert lm.sample("the", beam=1, sampling=True, max_len_b=8).startswith("the")
    first = lm.score("the game was played")["positional_scores"]
    again = lm.score("the game was played")["positional_scores"]
    assert torch.equal(first, again)  # sentences are scored from a zero state each time


def test_eval_lm_with_the_default_task_warns_with_the_right_flag(data_bin, trained):
    save_dir, _ = trained
    out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir", USER_DIR,
              "--path", str(save_dir / "checkpoint_best.pt"), "--cpu", "--tokens-per-sample",
              "20", "--batch-size", "4", cwd=save_dir)
    assert "use --task variable_bptt_lm" in out


def test_resume_at_an_epoch_boundary_is_bit_identical(data_bin, trained, tmp_path):
    save_dir, log = trained
    part = tmp_path / "ck"
    train(data_bin, part, "--max-epoch", "1")
    resumed = train(data_bin, part, "--max-epoch", "2")
    assert re.search(r"Loaded checkpoint .* \(epoch 2 @ \d+ updates\)", resumed)
    assert valid_losses(resumed) == valid_losses(log)[1:]
    a = torch.load(save_dir / "checkpoint_last.pt")["model"]
    b = torch.load(part / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_update_freq_mid_epoch_validation_and_max_update(data_bin, tmp_path):
    log = train(data_bin, tmp_path / "ck", "--update-freq", "2",
                "--validate-interval-updates", "10", "--max-update", "25")
    assert len(valid_losses(log)) == 3  # at updates 10, 20 and the final 25
    assert re.search(r"num_updates 25\b", log)


def test_two_cpu_processes_share_the_rows(data_bin, tmp_path):
    from fairseq_awd.bptt_batches import train_windows

    logs = run_two_ranks([sys.executable, "-m", "fairseq_cli.train", str(data_bin),
                          "--user-dir", USER_DIR, *TINY_MODEL, *TASK, "--save-dir",
                          str(tmp_path / "ck"), "--max-epoch", "1"], 29517, tmp_path)
    stream_len = int(re.search(r"train: ([\d,]+) tokens", logs[0]).group(1).replace(",", ""))
    # the corpus cut into 4 x 2 rows; both ranks read the same windows, so an epoch
    # has as many updates as one rank's windows
    windows = train_windows(stream_len // 8, 20, 0.95, 5.0, 5, seed=7, epoch=1)
    assert re.search(rf"\| bsz 8 \| num_updates {len(windows)} ", logs[0]), logs[0][-2000:]
