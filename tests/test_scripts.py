"""The scripts users run on their own logs and machines."""
import json
import re
import subprocess
import sys

import pytest

from conftest import ENV, ROOT, perplexity

sys.path.insert(0, str(ROOT / "scripts"))
from plot_learning_curve import read_log  # noqa: E402

LOG = """\
2026-11-25 16:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.3 | ar 0.01 | tar 0.008 | ppl 645.8 | wps 1 | num_updates 365
2026-11-25 16:00:01 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 8.8 | ppl 470.1 | wps 1 | num_updates 730
2026-11-25 16:00:02 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 8.9 | ppl 480.0 | wps 1 | num_updates 1095
2026-11-25 16:00:02 | INFO | fairseq_awd.nt_asgd | NT-ASGD: switching to averaged SGD from the next update (validation loss 8.9012)
2026-11-25 16:00:03 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 8.7 | ppl 415.2 | wps 1 | num_updates 1100
"""


def test_learning_curve_reads_validations_and_the_switch(tmp_path):
    log = tmp_path / "run" / "train.log"
    log.parent.mkdir()
    log.write_text(LOG)
    assert read_log(log) == ([1, 2, 3], [645.8, 470.1, 415.2], 3)
    out = tmp_path / "curve.png"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_learning_curve.py"), str(log),
                    str(log), "--labels", "a", "b", "-o", str(out)], check=True, env=ENV)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_profile_timeline_charges_gpu_idle_to_what_launched_the_next_kernel(tmp_path):
    """A hand-made trace of two 1000 us updates: in each, a forward's aten::mul
    launches a 100 us kernel at 300 us, the autograd thread launches a 200 us
    kernel at 600 us; the GPU is busy 300 us of each 1000."""
    events = []
    for step, t in enumerate((0, 1000)):
        events += [
            {"name": f"ProfilerStep#{step}", "cat": "user_annotation", "ts": t, "dur": 1000,
             "tid": 1},
            {"name": "forward", "cat": "user_annotation", "ts": t + 250, "dur": 100, "tid": 1},
            {"name": "aten::mul", "cat": "cpu_op", "ts": t + 260, "dur": 30, "tid": 1},
            {"name": "cudaLaunchKernel", "cat": "cuda_runtime", "ts": t + 270, "dur": 5,
             "tid": 1, "args": {"correlation": 2 * step}},
            {"name": "mul_kernel", "cat": "kernel", "ts": t + 300, "dur": 100,
             "args": {"correlation": 2 * step}},
            {"name": "autograd::engine::evaluate_function: MulBackward0", "cat": "cpu_op",
             "ts": t + 550, "dur": 60, "tid": 2},
            {"name": "aten::mul", "cat": "cpu_op", "ts": t + 560, "dur": 40, "tid": 2},
            {"name": "cudaLaunchKernel", "cat": "cuda_runtime", "ts": t + 570, "dur": 5,
             "tid": 2, "args": {"correlation": 2 * step + 1}},
            {"name": "mul_backward_kernel", "cat": "kernel", "ts": t + 600, "dur": 200,
             "args": {"correlation": 2 * step + 1}},
        ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_train.py"),
                          "--timeline", str(trace)], env=ENV, check=True,
                         capture_output=True, text=True).stdout
    assert "per update (2): wall 1.00 ms, GPU busy 0.30 ms (30%), 2 kernels and copies" in out
    # idle before the forward's kernel: 300 us in the first update, 1000 - 800 + 300 in
    # the second; before the backward's: 200 us each time
    assert "GPU idle per update by phase: forward 0.40 ms, backward 0.20 ms" in out
    assert re.search(r"0\.400 +1\.0  forward / aten::mul", out), out
    assert re.search(r"0\.200 +1\.0  backward / aten::mul", out), out


@pytest.mark.slow
def test_benchmark_prints_its_table(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--size", "small", "--steps",
         "1", "--batch-size", "2", "--bptt", "10", "--eval-tokens", "50", "--json",
         str(tmp_path / "b.json")], check=True, env=ENV, capture_output=True, text=True).stdout
    for name in ("awd_lstm wd0.5", "awd_lstm wd0", "lstm_lm", "weight_drop_0.5_over_0_train",
                 "fairseq-train", "fairseq_train_over_bare_loop",
                 "cache_pointer_over_per_token_loop",
                 "cache_pointer_reference_windows_over_per_token_loop", "dynamic evaluation"):
        assert name in out
    import json
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    bare = [r for r in rows if r["model"] != "fairseq-train"]
    assert len(bare) == 3 and len(rows) == 4  # awd_lstm wd0.5 and wd0, lstm_lm; fairseq-train
    assert all(r["train_tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 for r in rows)
    assert all(r["peak_memory_mb"] > 0 for r in bare)


@pytest.mark.slow
@pytest.mark.parametrize("mode,names", [
    (["--vocab", "3000", "--softmax-cutoffs", "500,1500"], ["full softmax", "split softmax"]),
    (["--mos"], ["awd_lstm wd0.5", "awd_lstm_mos"])])
def test_benchmark_compares_two_variants(tmp_path, mode, names):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--size", "tiny", "--steps",
         "1", "--batch-size", "2", "--bptt", "10", *mode, "--json", str(tmp_path / "b.json")],
        check=True, env=ENV, capture_output=True, text=True).stdout
    import json
    result = json.loads((tmp_path / "b.json").read_text())
    assert [r["model"] for r in result["rows"]] == names
    assert all(r["train_tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in result["rows"])
    train, memory = result["ratios"].values()
    assert train > 0 and memory > 0 and out.startswith("device cpu, awd_lstm ")


@pytest.mark.slow
def test_the_readme_demo_prints_a_perplexity_in_the_range_it_states(tmp_path):
    low, high = map(float, re.search(r"test perplexity, between (\d+) and (\d+)",
                                     (ROOT / "README.md").read_text()).groups())
    env = {**ENV, "OUT": str(tmp_path / "demo"), "OMP_NUM_THREADS": "2"}  # as the README runs it
    out = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, check=True,
                         capture_output=True, text=True)
    ppl = perplexity(out.stdout + out.stderr)
    assert low <= ppl <= high, ppl


def test_translation_results_pick_by_validation_bleu_and_average_over_seeds(tmp_path):
    import sacrebleu
    refs = (ROOT / "data" / "tatoeba-de-en" / "test.en").read_text().splitlines()[:12]
    valid = (ROOT / "data" / "tatoeba-de-en" / "valid.en").read_text().splitlines()[:200]
    wrong = refs[:-1] + ["no"]
    # lstm_d0.1 has the lower validation loss, lstm_d0.3 the higher validation BLEU
    runs = {"lstm_d0.1.s1": (3.9, refs, 2000, valid[:-1] + ["no"]),
            "lstm_d0.3.s1": (4.1, wrong, 3000, valid), "lstm_d0.3.s2": (4.0, refs, 1000, valid)}
    for name, (loss, hyps, wps, valid_hyps) in runs.items():
        (tmp_path / f"{name}.valid.hyp").write_text("\n".join(valid_hyps) + "\n")
        (tmp_path / f"{name}.train.log").write_text(
            "fairseq_cli.train | num. shared model params: 1,234 (num. trained: 1,234)\n"
            f"| valid | epoch 001 | valid on 'valid' subset | loss 5.0 | nll_loss 4 |\n"
            f"| train | epoch 001 | loss 6 | wps {wps} | ups 1\n"
            f"| valid | epoch 002 | valid on 'valid' subset | loss {loss} | nll_loss 3 |\n"
            f"| valid | epoch 003 | valid on 'valid' subset | loss 4.5 | nll_loss 3 |\n"
            f"| train | epoch 002 | loss 5 | wps {wps} | ups 1\n"
            "fairseq_cli.train | done training in 120.0 seconds\n")
        (tmp_path / f"{name}.hyp").write_text("\n".join(hyps) + "\n")
    script = [sys.executable, str(ROOT / "examples" / "translation" / "results.py"), str(tmp_path)]
    best = subprocess.run(script + ["--best", "lstm_"], env=ENV, capture_output=True, text=True)
    assert best.stdout.strip() == "lstm_d0.3"
    table = subprocess.run(script + ["--final", "lstm_d0.3"], env=ENV, capture_output=True,
                           text=True).stdout
    valid_bleu = sacrebleu.corpus_bleu(valid[:-1] + ["no"], [valid]).score
    assert f"| lstm_d0.1.s1 | 3.900 | 2 | 3 | {valid_bleu:.2f} | 100.00 | 100.00 | 2.0 | 2,000 |" \
        in table
    bleu, chrf = (f(wrong, [refs]).score for f in (sacrebleu.corpus_bleu, sacrebleu.corpus_chrf))
    assert 0 < bleu < 100 and 0 < chrf < 100
    spread = [f"{(100 + x) / 2:.2f} ± {(100 - x) / 2 ** 0.5:.2f}" for x in (bleu, chrf)]
    assert f"| lstm_d0.3 | 2 | {spread[0]} | {spread[1]} | 3.0 ± 0.0 | 2.0 ± 0.0 | " \
        "2,000 ± 1,414 | 1,234 |" in table
