"""Every bad input ends with one line starting `fairseq-awd:` that names the problem
and the fix: a non-zero exit code and no traceback, through the real commands."""
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ENV, ROOT, USER_DIR, WT2, run

pytestmark = pytest.mark.slow

MODEL = ["--arch", "awd_lstm", "--decoder-embed-dim", "16", "--decoder-hidden-size", "24",
         "--criterion", "ar_tar_cross_entropy", "--lr", "1", "--cpu", "--seed", "1"]
SGD = ["--optimizer", "nag", "--momentum", "0"]
TASK = ["--user-dir", USER_DIR, "--task", "variable_bptt_lm", "--bptt", "10"]


def preprocess(dest, cwd, splits, *flags):
    """A data-bin at cwd/dest from {split: text}."""
    prefs = []
    for split, text in splits.items():
        (cwd / f"{dest}.{split}.txt").write_text(text)
        prefs += [f"--{split}pref", f"{dest}.{split}.txt"]
    run(sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", *prefs,
        "--destdir", dest, "--workers", "1", *flags, cwd=cwd)
    return cwd / dest


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Data-bins with something wrong, a trained checkpoint, and damaged copies of it."""
    tmp = tmp_path_factory.mktemp("bad")
    lines = {s: (WT2 / f"{s}.txt").read_text().splitlines(keepends=True) for s in
             ("train", "valid", "test")}
    text = {"train": "".join(lines["train"][:60]), "valid": "".join(lines["valid"][:12]),
            "test": "".join(lines["test"][:12])}
    good = preprocess("good", tmp, text)
    ckpt = tmp / "ck" / "checkpoint_last.pt"
    run(*train(good, "--max-update", "2", "--save-dir", str(ckpt.parent)), cwd=tmp)
    # the same words in another order: the same size, another dictionary
    symbols = (good / "dict.txt").read_text().splitlines(keepends=True)
    symbols[0], symbols[1] = symbols[1], symbols[0]
    (tmp / "permuted.dict.txt").write_text("".join(symbols))
    latin1 = tmp / "latin1"
    latin1.mkdir()
    for split in ("train", "valid", "test"):
        (latin1 / f"{split}.txt").write_bytes(b"ok\ncaf\xe9\n" if split == "valid" else b"ok\n")
    de_en = tmp / "de_en"
    de_en.mkdir()
    for split, n in (("train", 60), ("valid", 12)):
        for lang in ("de", "en"):
            raw = (ROOT / "data" / "tatoeba-de-en" / f"{split}.{lang}").read_text()
            (de_en / f"{split}.{lang}").write_text("".join(raw.splitlines(keepends=True)[:n]))
    run(sys.executable, "-m", "fairseq_cli.preprocess", "-s", "de", "-t", "en", "--trainpref",
        "de_en/train", "--validpref", "de_en/valid", "--destdir", "de_en/bin", "--workers", "1",
        cwd=tmp)
    other = tmp / "other"  # a save-dir holding the checkpoint of a model of other sizes
    other.mkdir()
    shutil.copyfile(ckpt, other / "checkpoint_last.pt")
    bad_dict = tmp / "bad_dict"
    shutil.copytree(good, bad_dict)
    words = (bad_dict / "dict.txt").read_text().splitlines(keepends=True)
    words[2] = "garbage_without_count\n"
    (bad_dict / "dict.txt").write_text("".join(words))
    damaged = {}
    for name, size in (("empty", 0), ("half", ckpt.stat().st_size // 2)):
        damaged[name] = tmp / f"{name}.pt"
        shutil.copyfile(ckpt, damaged[name])
        with open(damaged[name], "r+b") as f:
            f.truncate(size)
    return SimpleNamespace(
        tmp=tmp, good=good, de_en=de_en / "bin", latin1=latin1, ckpt=ckpt, damaged=damaged,
        other=other, bad_dict=bad_dict,
        permuted=preprocess("permuted", tmp, text, "--srcdict", "permuted.dict.txt"),
        no_test=preprocess("no_test", tmp, {"train": text["train"], "valid": text["valid"]}),
        smaller=preprocess("smaller", tmp, {"train": "a b c d\n" * 20, "test": "a b\n"}),
        empty_valid=preprocess("empty_valid", tmp, {**text, "valid": ""}),
        short_valid=preprocess("short_valid", tmp, {**text, "valid": "one two three\n"
                                                                     "four five six\n"}))


def train(data, *flags, optimizer=SGD):
    return [sys.executable, "-m", "fairseq_cli.train", str(data), *TASK, *MODEL, *optimizer,
            "--batch-size", "2", "--max-epoch", "1", *flags]


def translate(data, *flags):
    return [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR,
            "--task", "translation", "-s", "de", "-t", "en", "--arch", "awd_lstm_translation",
            "--encoder-embed-dim", "8", "--encoder-hidden-size", "8", "--decoder-embed-dim", "8",
            "--decoder-hidden-size", "8", "--decoder-out-embed-dim", "8", "--max-tokens", "500",
            "--optimizer", "adam", "--lr", "0.001", "--max-update", "1", "--cpu", *flags]


def eval_lm(data, path, *flags):
    return [sys.executable, "-m", "fairseq_cli.eval_lm", str(data), "--user-dir", USER_DIR,
            "--task", "variable_bptt_lm", "--path", str(path), "--cpu", *flags]


def hub(path, data):
    return [sys.executable, "-c", "from fairseq_awd.awd_lstm import AWDLSTMModel; "
            f"AWDLSTMModel.from_pretrained('{path.parent}', '{path.name}', "
            f"data_name_or_path='{data}', user_dir='{USER_DIR}').score('the')"]


def ablate(data, *flags):
    return [sys.executable, "-m", "fairseq_awd.ablate", str(data), "--out", "ab", *flags,
            "--", *TASK[2:], *MODEL, *SGD, "--batch-size", "2", "--max-epoch", "1"]


def binarize(raw):
    return ["bash", "-c", f"source {ROOT / 'scripts' / 'prepare_data.sh'} && "
            f"binarize {raw} {raw}/bin"]


CASES = {
    "dropout outside [0, 1)": (lambda b: train(b.good, "--dropout", "1"),
                               "--dropout must be in [0, 1), got 1.0"),
    "no LSTM layers": (lambda b: train(b.good, "--decoder-layers", "0"),
                       "--decoder-layers must be at least 1, got 0"),
    "bptt below the shortest length": (lambda b: train(b.good, "--bptt", "3"),
                                       "--bptt 3 is below --min-seq-len 5"),
    "more rows than the corpus allows": (
        lambda b: train(b.good, "--batch-size", "100000"),
        "too few for 100000 rows (--batch-size) of more than 5 tokens; lower --batch-size"),
    "--max-tokens": (lambda b: train(b.good, "--max-tokens", "100"),
                     "--max-tokens has no meaning for variable_bptt_lm"),
    "nt_asgd without validation": (
        lambda b: train(b.good, "--disable-validation", optimizer=["--optimizer", "nt_asgd"]),
        "drop --disable-validation"),
    "an empty validation split": (
        lambda b: train(b.empty_valid),
        "split 'valid' in {b.empty_valid} is empty ({b.empty_valid}/valid.bin has "
        "0 bytes): give fairseq-preprocess a --validpref file with text"),
    "a 7-token validation split": (
        lambda b: train(b.short_valid),
        "split 'valid' has 8 tokens: too few for 10 rows (--valid-rows) of more than 5 "
        "tokens; lower --valid-rows (the split has room for 1 rows in all)"),
    "a dictionary of another size": (
        lambda b: eval_lm(b.smaller, b.ckpt),
        "{b.ckpt} was trained with a dictionary of"),
    "the same size, other words": (
        lambda b: eval_lm(b.permuted, b.ckpt),
        "{b.ckpt} was trained with another dictionary than {b.permuted}/dict.txt "
        "(same size, other symbols or order): use the data-bin it was trained on"),
    "the hub with another dictionary": (
        lambda b: hub(b.ckpt, b.permuted),
        "{b.ckpt} was trained with another dictionary than {b.permuted}/dict.txt"),
    "a save-dir of a model of other sizes": (
        lambda b: train(b.good, "--decoder-hidden-size", "32", "--save-dir", str(b.other)),
        "{b.other}/checkpoint_last.pt holds another model (decoder_hidden_size: checkpoint 24, "
        "command 32): train this one with another --save-dir, or start it from a checkpoint "
        "of its own settings with --restore-file PATH --reset-optimizer --reset-dataloader "
        "--reset-meters"),
    "a malformed dictionary line": (
        lambda b: train(b.bad_dict),
        "{b.bad_dict}/dict.txt line 3 is not '<word> <count>' ('garbage_without_count'): each "
        "line is '<word> <count>' as fairseq-preprocess writes it; rebuild the data-bin with "
        "fairseq-preprocess"),
    "--tokens-per-sample": (lambda b: train(b.good, "--tokens-per-sample", "35"),
                            "--tokens-per-sample is language_modeling's block size"),
    "--context-window": (lambda b: eval_lm(b.good, b.ckpt, "--context-window", "5"),
                         "--context-window is for block-wise scoring"),
    "a negative cache window": (lambda b: eval_lm(b.good, b.ckpt, "--cache-window", "-1"),
                                "--cache-window must be >= 0 (0: no cache), got -1"),
    "a cache lambda outside [0, 1]": (
        lambda b: eval_lm(b.good, b.ckpt, "--cache-window", "5", "--cache-lambda", "1.5"),
        "--cache-lambda must be in [0, 1], got 1.5"),
    "the cache over several rows": (
        lambda b: eval_lm(b.good, b.ckpt, "--cache-window", "5", "--batch-size", "2"),
        "--cache-window scores one stream: use one row (--batch-size 1) on one rank"),
    "dynamic evaluation with the cache": (
        lambda b: eval_lm(b.good, b.ckpt, "--dynamic-eval", "--cache-window", "5"),
        "--dynamic-eval with --cache-window is not supported"),
    "dynamic evaluation over several rows": (
        lambda b: eval_lm(b.good, b.ckpt, "--dynamic-eval", "--batch-size", "2"),
        "--dynamic-eval scores one stream: use one row (--batch-size 1) on one rank"),
    "eval-lm on a 0-byte checkpoint": (
        lambda b: eval_lm(b.good, b.damaged["empty"]),
        "{b.damaged[empty]} is not a complete checkpoint (0 bytes)"),
    "eval-lm on a truncated checkpoint": (
        lambda b: eval_lm(b.good, b.damaged["half"]),
        "{b.damaged[half]} is not a complete checkpoint"),
    "the hub on a truncated checkpoint": (
        lambda b: hub(b.damaged["half"], b.good),
        "{b.damaged[half]} is not a complete checkpoint"),
    "an unknown ablation row": (lambda b: ablate(b.good, "--rows", "full,no-lstm"),
                                "unknown row no-lstm: the rows are full, no-weight-drop"),
    "an ablation row the base lacks": (
        lambda b: ablate(b.good, "--rows", "full,sgd"),
        "row 'sgd' changes what --optimizer nt_asgd does, and the base recipe has "
        "--optimizer nag"),
    "an ablation without a test split": (
        lambda b: ablate(b.no_test, "--rows", "full"),
        "no test split in"),
    "split softmax cutoffs not increasing": (
        lambda b: train(b.good, "--softmax-cutoffs", "300,200"),
        "--softmax-cutoffs 300,200: the cutoffs must be positive and increasing"),
    "a split softmax cutoff beyond the vocabulary": (
        lambda b: train(b.good, "--softmax-cutoffs", "100,100000"),
        "--softmax-cutoffs 100,100000: 100000 is beyond the vocabulary ("),
    "a mixture of no softmaxes": (
        lambda b: train(b.good, "--arch", "awd_lstm_mos", "--n-experts", "0"),
        "--n-experts must be at least 1, got 0"),
    "a latent dropout outside [0, 1)": (
        lambda b: train(b.good, "--arch", "awd_lstm_mos", "--latent-dropout", "1.0"),
        "--latent-dropout must be in [0, 1), got 1.0"),
    "an untied mixture of softmaxes": (
        lambda b: train(b.good, "--arch", "awd_lstm_mos", "--untie-embeddings"),
        "awd_lstm_mos ties its experts' softmax to the embedding, as the MoS reference does"),
    "a translation decoder deeper than its encoder": (
        lambda b: translate(b.de_en, "--encoder-layers", "1", "--decoder-layers", "2"),
        "--encoder-layers (1) must equal --decoder-layers (2): each decoder layer starts "
        "from the final state of the encoder layer at its depth"),
    "non-UTF-8 text for the data scripts": (
        lambda b: binarize(b.latin1), "{b.latin1}/valid.txt line 2 is not UTF-8"),
    "a reference comparison without the reference": (
        lambda b: ["bash", str(ROOT / "scripts" / "compare_reference.sh"), str(b.tmp), str(WT2)],
        "{b.tmp} is not a checkout of salesforce/awd-lstm-lm"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_line(bad, case, tmp_path):
    command, message = CASES[case]
    # cwd tmp_path: a training that got as far as saving would save there
    proc = subprocess.run(command(bad), env=ENV, capture_output=True, text=True, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-awd: ") and message.format(b=bad) in last, last
    assert sum(line.startswith("fairseq-awd: ") for line in output.splitlines()) == 1
