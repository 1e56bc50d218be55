"""fairseq-preprocess -> fairseq-train -> fairseq-eval-lm -> hub, on shipped data."""
import re
import sys

import pytest
import torch

from fairseq_awd.awd_lstm import AWDLSTMModel

from conftest import USER_DIR, run

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
    ppl = float(re.search(r"Perplexity: ([\d.]+)", out).group(1))
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
