"""Two CPU ranks under both of fairseq's DDP backends, with a split softmax whose
tails one rank never sees: the same weights either way, no hang."""
import sys

import pytest
import torch

from conftest import USER_DIR, run, run_two_ranks

pytestmark = pytest.mark.slow

COMMON = [f"c{i}" for i in range(20)]
RARE = [f"r{i}" for i in range(30)]


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory):
    """Common words everywhere; the rare ones (the tails) only in the first half of
    the training text, which rank 0 reads: rank 1's batches hold no tail word."""
    tmp = tmp_path_factory.mktemp("lopsided")
    g = torch.Generator().manual_seed(0)

    def lines(n, rare):
        words = COMMON + (RARE if rare else [])
        return "".join(" ".join(words[i] for i in torch.randint(len(words), (12,),
                                                                 generator=g)) + "\n"
                       for _ in range(n))

    (tmp / "train.txt").write_text(lines(60, True) + lines(60, False))
    (tmp / "valid.txt").write_text(lines(20, True))
    run(sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref",
        "train.txt", "--validpref", "valid.txt", "--destdir", "bin", "--workers", "1", cwd=tmp)
    return tmp


def test_both_backends_train_the_same_weights(lopsided):
    symbols = [line.split()[0] for line in (lopsided / "bin" / "dict.txt").read_text().splitlines()]
    # after fairseq's 4 specials: the 20 common words, then the rare ones, in two tails
    assert set(symbols[:20]) == set(COMMON) and set(symbols[20:50]) == set(RARE)
    weights = {}
    for port, ddp_backend in ((29530, "legacy_ddp"), (29531, "c10d")):
        save_dir = lopsided / ddp_backend
        logs = run_two_ranks(
            [sys.executable, "-m", "fairseq_cli.train", str(lopsided / "bin"), "--user-dir",
             USER_DIR, "--arch", "awd_lstm", "--decoder-embed-dim", "16",
             "--decoder-hidden-size", "24", "--softmax-cutoffs", "24,40", "--criterion",
             "ar_tar_cross_entropy", "--task", "variable_bptt_lm", "--bptt", "10",
             "--batch-size", "2", "--optimizer", "nt_asgd", "--lr", "10", "--clip-norm",
             "0.25", "--max-update", "12", "--cpu", "--seed", "3", "--save-dir", str(save_dir),
             "--no-epoch-checkpoints", "--log-format", "simple"], port, lopsided, ddp_backend)
        assert "num_updates 12" in logs[0]
        weights[ddp_backend] = torch.load(save_dir / "checkpoint_last.pt")["model"]
    legacy, c10d = weights["legacy_ddp"], weights["c10d"]
    assert legacy.keys() == c10d.keys()
    for k in legacy:
        assert torch.allclose(legacy[k].float(), c10d[k].float(), atol=1e-6), k
    # the rare words' rows trained (on rank 0's batches), away from the uniform start
    rare_rows = legacy["decoder.body.embed_tokens.weight"][24:54]
    assert rare_rows.abs().max() > 0.1
