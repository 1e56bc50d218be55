"""Mutation testing of the techniques: does a fast test fail when one line of a
technique is made wrong?

Each mutant in MUTANTS replaces one line's text in a package file (a real bug of
the technique: a mask drawn per step, no rescale, a state not carried, ...). For
each, the repository's files (tracked and untracked, not ignored) are copied into
a temporary directory, the line is replaced there, and the fast suite runs in the
copy (PYTHONPATH: the copy's package), stopping at the first failure: first the
test file that should catch the mutant, then the rest,

    python -m pytest -q -x -p no:cacheprovider -m "not slow" <test file>
    python -m pytest -q -x -p no:cacheprovider -m "not slow" --ignore <test file> tests/

A mutant is killed when pytest fails. One markdown row per mutant (the first
failing test, or SURVIVED), and exit status 1 if any survived. The working tree
is only read; an unmutated copy runs once first (the baseline, which must pass).

    python scripts/mutants.py [--only SUBSTRING] [--list] [--no-baseline]

A mutant killed by its test file costs that file; a surviving one (and the
baseline) the whole fast suite.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 3600  # a mutant that hangs (a loop that never ends) counts as killed
NO_TESTS_RAN = 5  # pytest's exit status when -m "not slow" leaves a file nothing to run


@dataclass(frozen=True)
class Mutant:
    file: str  # relative to the repository
    description: str
    old: str  # the text of one line (without its indentation), found exactly once
    new: str
    first_test: str  # the test file run first: the one expected to kill it


def mutant(name: str, description: str, old: str, new: str, first_test: str) -> Mutant:
    return Mutant(f"fairseq_awd/{name}", description, old, new, f"tests/{first_test}")


MUTANTS = [
    # weight drop (section 2)
    mutant("weight_drop.py", "weight drop active in eval",
           "if not self.training or p == 0:", "if p == 0:", "test_dropouts.py"),
    mutant("weight_drop.py", "weight drop mask not rescaled by 1/(1-p)",
           "mask = torch.rand_like(w).ge_(p).mul_(1 / (1 - p))",
           "mask = torch.rand_like(w).ge_(p)", "test_dropouts.py"),
    mutant("weight_drop.py", "hidden-to-hidden matrix never dropped",
           'self.dropped(getattr(self, "weight_hh_raw" + s)),',
           'getattr(self, "weight_hh_raw" + s),', "test_dropouts.py"),
    # locked dropout (4.2)
    mutant("locked_dropout.py", "mask drawn per time step, not per sequence",
           "return like.new_empty(like.shape[-2:]).bernoulli_(1 - self.p) / (1 - self.p)",
           "return like.new_empty(like.shape).bernoulli_(1 - self.p) / (1 - self.p)",
           "test_dropouts.py"),
    mutant("locked_dropout.py", "mask not rescaled by 1/(1-p)",
           "return like.new_empty(like.shape[-2:]).bernoulli_(1 - self.p) / (1 - self.p)",
           "return like.new_empty(like.shape[-2:]).bernoulli_(1 - self.p)",
           "test_dropouts.py"),
    mutant("locked_dropout.py", "locked dropout active in eval",
           "if not self.training or self.p == 0:", "if self.p == 0:", "test_dropouts.py"),
    # embedding dropout (4.3)
    mutant("embedding_dropout.py", "one draw per token, not per word type",
           "rows = rows * F.embedding(tokens, mask)",
           "rows = rows * weight.new_empty(tokens.shape + (1,)).bernoulli_(1 - p) / (1 - p)",
           "test_dropouts.py"),
    mutant("embedding_dropout.py", "one draw per embedding entry, not per row",
           "mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)",
           "mask = weight.new_empty(weight.shape).bernoulli_(1 - p) / (1 - p)",
           "test_dropouts.py"),
    mutant("embedding_dropout.py", "kept rows not rescaled by 1/(1-p)",
           "mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)",
           "mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p)",
           "test_dropouts.py"),
    # weight tying (4.4)
    # the split softmax (the reference's splitcross.py)
    mutant("split_softmax.py", "a word at a cutoff counted in the tail before it",
           "tail = torch.bucketize(target, self.cutoffs, right=True)  # 0: the head",
           "tail = torch.bucketize(target, self.cutoffs)", "test_split_softmax.py"),
    mutant("split_softmax.py", "every tail word trained on the first tail's tombstone",
           "out = head.gather(1, torch.where(tail == 0, target, n + tail - 1)[:, None]).squeeze(1)",
           "out = head.gather(1, torch.where(tail == 0, target, n)[:, None]).squeeze(1)",
           "test_split_softmax.py"),
    mutant("split_softmax.py", "the full distribution's tails all under the first tombstone",
           "parts.append(head[..., n + k - 1 : n + k]", "parts.append(head[..., n : n + 1]",
           "test_split_softmax.py"),
    mutant("split_softmax.py", "each tail's softmax at every position in training",
           "lprobs = self.tail_log_probs(flat[rows], weights[k], biases[k])",
           "lprobs = self.tail_log_probs(flat, weights[k], biases[k])[rows]",
           "test_split_softmax.py"),
    mutant("split_softmax.py", "padding positions counted in the split loss",
           "return -lprobs.masked_fill(target.eq(ignore_index), 0).sum()",
           "return -lprobs.sum()", "test_split_softmax.py"),
    # the mixture of softmaxes (Yang et al. 2018)
    mutant("mixture_of_softmaxes.py", "the prior a softmax over time, not over the experts",
           "log_prior = F.log_softmax(self.prior(h).float(), dim=-1)  # (batch, time, K)",
           "log_prior = F.log_softmax(self.prior(h).float(), dim=1)", "test_mos.py"),
    mutant("mixture_of_softmaxes.py", "latent dropout drawn per time step",
           "latent = self.latent_drop(latent.transpose(0, 1)).transpose(0, 1)",
           "latent = F.dropout(latent, self.latent_drop.p, self.training)", "test_mos.py"),
    mutant("mixture_of_softmaxes.py", "the experts summed without their prior",
           "return torch.logsumexp(log_prior.unsqueeze(-1) + expert, dim=-2)",
           "return torch.logsumexp(expert, dim=-2)", "test_mos.py"),
    mutant("tied_softmax.py", "a tied softmax gets weights of its own",
           "if not tied:", "if tied:", "test_model.py"),
    mutant("tied_softmax.py", "an untied softmax uses the embedding",
           "return embedding_weight if self.weight is None else self.weight",
           "return embedding_weight", "test_translation.py"),
    mutant("tied_softmax.py", "the tied softmax sends no gradient to the embedding",
           "return embedding_weight if self.weight is None else self.weight",
           "return embedding_weight.detach() if self.weight is None else self.weight",
           "test_model.py"),
    # AR and TAR (4.6)
    mutant("ar_tar_criterion.py", "AR on the raw output, not the dropped one",
           "ar = dropped.float().pow(2).mean()", "ar = raw.float().pow(2).mean()",
           "test_criterion.py"),
    mutant("ar_tar_criterion.py", "TAR on the dropped output, not the raw one",
           "return ar, (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()",
           "return ar, (dropped[:, 1:] - dropped[:, :-1]).float().pow(2).mean()",
           "test_criterion.py"),
    mutant("ar_tar_criterion.py", "AR on the raw output with padding (masked form)",
           "ar = (dropped.float().pow(2) * mask).sum() / (mask.sum() * raw.size(-1))",
           "ar = (raw.float().pow(2) * mask).sum() / (mask.sum() * raw.size(-1))",
           "test_criterion.py"),
    mutant("ar_tar_criterion.py", "alpha dropped",
           "ar, tar = ar * (self.ar_alpha * ntokens), tar * (self.tar_beta * ntokens)",
           "ar, tar = ar * ntokens, tar * (self.tar_beta * ntokens)", "test_criterion.py"),
    mutant("ar_tar_criterion.py", "beta dropped",
           "ar, tar = ar * (self.ar_alpha * ntokens), tar * (self.tar_beta * ntokens)",
           "ar, tar = ar * (self.ar_alpha * ntokens), tar * ntokens", "test_criterion.py"),
    # NT-ASGD (section 3)
    mutant("nt_asgd.py", "switch compares with all but the last nonmono+1 validations",
           "worse = len(history) > n and loss > min(history[: len(history) - n])",
           "worse = len(history) > n + 1 and loss > min(history[: len(history) - n - 1])",
           "test_nt_asgd.py"),
    mutant("nt_asgd.py", "average from the first averaged iterate, not the second",
           "mu = 1 / max(1, k - 1)", "mu = 1 / k", "test_nt_asgd.py"),
    mutant("nt_asgd.py", "averaged step with this step's lr, not the previous one's",
           'lr = group["lr"] if info["eta"] is None else info["eta"]', 'lr = group["lr"]',
           "test_nt_asgd.py"),
    mutant("nt_asgd.py", "validation sees the raw weights, not the average",
           'p.data.copy_(state["ax"])', "pass", "test_nt_asgd.py"),
    # variable-length BPTT batches (4.1)
    mutant("bptt_batches.py", "target not shifted by one token",
           '"target": self.rows[:, offset + 1 : offset + 1 + seq_len].contiguous(),',
           '"target": self.rows[:, offset : offset + seq_len].contiguous(),',
           "test_variable_bptt.py"),
    mutant("bptt_batches.py", "window length never drawn around bptt/2",
           "seq_len = max(min_len, int(rng.normal(mean, std)))",
           "seq_len = max(min_len, int(rng.normal(bptt, std)))", "test_variable_bptt.py"),
    mutant("bptt_batches.py", "the same window lengths every epoch",
           "rng = np.random.default_rng([seed, epoch])", "rng = np.random.default_rng(seed)",
           "test_variable_bptt.py"),
    mutant("variable_bptt_lm.py", "lr not rescaled by seq_len/bptt",
           "optimizer.set_lr(self.scaled_lr)", "optimizer.set_lr(self.base_lr)",
           "test_variable_bptt.py"),
    mutant("variable_bptt_lm.py", "lr scaled by the last batch's length under update-freq",
           "self.scaled_lr = self.base_lr * sum(self.drawn) / len(self.drawn) / self.cfg.bptt",
           "self.scaled_lr = self.base_lr * drawn / self.cfg.bptt", "test_variable_bptt.py"),
    mutant("variable_bptt_lm.py", "a dummy training batch commits its state",
           "sample = with_commit(sample, not ignore_grad)", "sample = with_commit(sample, True)",
           "test_variable_bptt.py"),
    # the carried state (truncated BPTT)
    mutant("carried_state.py", "state not carried (every batch from zeros)",
           "return state", "return None", "test_model.py"),
    mutant("carried_state.py", "state saved under the batch's start, not its end",
           "end = None if offset is None else offset + seq_len", "end = offset",
           "test_model.py"),
    mutant("carried_state.py", "carried state not detached (BPTT not truncated)",
           "saved[end] = [(h.detach(), c.detach()) for h, c in state]",
           "saved[end] = list(state)", "test_variable_bptt.py"),
    mutant("carried_state.py", "only the latest offset kept: a retried batch starts from zeros",
           "while len(saved) > KEEP:", "while len(saved) > 1:", "test_model.py"),
    mutant("awd_lstm.py", "a dummy batch (commit=False) moves the carried state",
           "if carry and (stream is None or stream.commit):", "if carry:",
           "test_variable_bptt.py"),
    # neural cache pointer (section 5)
    mutant("cache_pointer.py", "a position sees its own target in its cache",
           "mask = torch.ones_like(logits, dtype=torch.bool).tril_(lag0 - 1)",
           "mask = torch.ones_like(logits, dtype=torch.bool).tril_(lag0)",
           "test_cache_pointer.py"),
    mutant("cache_pointer.py", "lambda and 1 - lambda swapped in the mixture",
           "self.window, self.theta, self.lam = window, theta, lam",
           "self.window, self.theta, self.lam = window, theta, 1 - lam",
           "test_cache_pointer.py"),
    mutant("cache_pointer.py", "cache used before `window` positions are behind",
           "first = min(T, max(0, self.window + 1 - self.seen))", "first = 0",
           "test_cache_pointer.py"),
    # dynamic evaluation (Krause et al. 2018)
    mutant("dynamic_eval.py", "decay not clamped at 1/lambda",
           "self.decay = [(r / mean_rms).clamp_(max=1 / self.lam) if self.lam else r * 0",
           "self.decay = [(r / mean_rms) if self.lam else r * 0", "test_dynamic_eval.py"),
    mutant("dynamic_eval.py", "step's sign flipped (gradient ascent)",
           "torch._foreach_addcmul_(self.params, grads, self.scale, value=-1)",
           "torch._foreach_addcmul_(self.params, grads, self.scale, value=1)",
           "test_dynamic_eval.py"),
    mutant("dynamic_eval.py", "decay pulls away from the trained weights",
           "toward_start = torch._foreach_sub(self.start, self.params)",
           "toward_start = torch._foreach_sub(self.params, self.start)",
           "test_dynamic_eval.py"),
    # checkpoints that survive a killed run
    mutant("safe_checkpoints.py", "checkpoints written in place, not atomically",
           'tmp = f"{path}.tmp"', "tmp = path", "test_compat.py"),
    mutant("safe_checkpoints.py", "the .tmp copied over the file, not renamed",
           "os.replace(tmp, path)", "shutil.copyfile(tmp, path)", "test_compat.py"),
    mutant("safe_checkpoints.py", "a cut-short checkpoint is not detected",
           'return f"{os.path.getsize(path):,} bytes, cut short ({e})"', "return None",
           "test_compat.py"),
    mutant("safe_checkpoints.py", "a member failing its CRC is not detected",
           "bad = archive.testzip()", "bad = None", "test_compat.py"),
    # the dictionary fingerprint
    mutant("dictionary_fingerprint.py", "fingerprint not checked",
           "elif not torch.equal(state_dict[key].cpu(), getattr(module, BUFFER).cpu()):",
           "elif False:", "test_translation.py"),
    mutant("dictionary_fingerprint.py", "fingerprint blind to the symbols' order",
           'digest = hashlib.sha256("\\n".join(dictionary.symbols).encode("utf-8")).digest()',
           'digest = hashlib.sha256("\\n".join(sorted(dictionary.symbols)).encode("utf-8"))'
           ".digest()", "test_translation.py"),
    mutant("dictionary_fingerprint.py", "a checkpoint without a fingerprint is refused",
           "state_dict[key] = getattr(module, BUFFER)  # written before fingerprints", "pass",
           "test_translation.py"),
    mutant("dictionary_fingerprint.py", "dictionary size not checked",
           "if rows != module.num_embeddings:", "if False:", "test_translation.py"),
    # the translation decoder
    mutant("awd_lstm_translation.py", "attention queried after dropout",
           "out, scores = self.attention(hs[-1], source, padding)",
           "out, scores = self.attention(hs[-1] if out_mask is None else hs[-1] * out_mask, "
           "source, padding)", "test_translation.py"),
    mutant("awd_lstm_translation.py", "input feeding dropped",
           "hs[0], cs[0] = lstm_step(torch.addmm(embed_gates[t], torch.cat([feed, hs[0]], 1),",
           "hs[0], cs[0] = lstm_step(torch.addmm(embed_gates[t], torch.cat([feed * 0, hs[0]], 1),",
           "test_translation.py"),
    mutant("awd_lstm_translation.py", "bridge dropped: the decoder starts from zeros",
           'hs, cs = list(encoder_out["final_h"]), list(encoder_out["final_c"])',
           'hs, cs = list(encoder_out["final_h"] * 0), list(encoder_out["final_c"] * 0)',
           "test_translation.py"),
    mutant("awd_lstm_translation.py", "attention output fed back and read undropped",
           "feed = out if out_mask is None else out * out_mask", "feed = out",
           "test_translation.py"),
]


def repository_files() -> List[str]:
    """Tracked files and untracked ones that git does not ignore (what a checkout
    plus work in progress holds), without files deleted from the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted({p for p in out.split("\0") if p and (ROOT / p).is_file()})


def copy_repository(dest: Path, files: List[str]) -> None:
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)  # copy2: scripts keep their executable bit


def mutated(m: Mutant, source: str) -> str:
    """The file's text with the mutant's line replaced; exits when the line is not
    found exactly once (the file changed under the table: fix the table)."""
    if "\n" in m.old or "\n" in m.new:
        sys.exit(f"{m.file}: '{m.description}': old and new must each be one line's text")
    count = source.count(m.old)
    if count != 1:
        sys.exit(f"{m.file}: '{m.description}': {m.old!r} occurs {count} times, not once")
    return source.replace(m.old, m.new)


def apply(m: Mutant, copy: Path) -> None:
    path = copy / m.file
    path.write_text(mutated(m, path.read_text()))


def test_env(copy: Path) -> dict:
    # PYTHONPATH: the copy's fairseq_awd, not the editable install (the working tree)
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(copy)}


def check_imports_copy(copy: Path) -> None:
    """The copy's package is the one that tests (and their fairseq subprocesses)
    import; otherwise every mutant would survive. Run from tests/, not the copy's
    root, which `python -c` would put on sys.path itself, as a subprocess started
    elsewhere (fairseq-train in a test's tmp_path) has only PYTHONPATH."""
    proc = subprocess.run([sys.executable, "-c", "import fairseq_awd; print(fairseq_awd.__file__)"],
                          cwd=copy / "tests", env=test_env(copy), capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    imported = Path(lines[-1]).resolve() if proc.returncode == 0 and lines else None
    if imported != (copy / "fairseq_awd" / "__init__.py").resolve():
        sys.exit(f"with PYTHONPATH={copy}, `import fairseq_awd` imports {imported} instead of "
                 f"the copy's (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def run_pytest(copy: Path, paths: List[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
           "not slow", *paths]
    try:
        return subprocess.run(cmd, cwd=copy, env=test_env(copy), capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, -1, "", f"TIMEOUT after {TIMEOUT_S} s")


def run_tests(copy: Path, first_test: Optional[str]) -> subprocess.CompletedProcess:
    """The fast suite, `first_test` first. Two runs, not `pytest FILE tests/`: pytest
    (8 and later) merges FILE into the directory's order, so it would not run first."""
    if first_test is None:
        return run_pytest(copy, ["tests/"])
    proc = run_pytest(copy, [first_test])
    if proc.returncode not in (0, NO_TESTS_RAN):
        return proc
    return run_pytest(copy, ["--ignore", first_test, "tests/"])


def first_failure(proc: subprocess.CompletedProcess) -> str:
    """The node id of the first failing test in pytest's short summary ('FAILED id -
    message'), or what else ended the run."""
    for line in proc.stdout.splitlines():
        found = re.match(r"(FAILED|ERROR) (.+?)(?: - .*)?$", line)
        if found:
            return found.group(2) if found.group(1) == "FAILED" else f"ERROR {found.group(2)}"
    if proc.returncode == -1:
        return proc.stderr
    return f"pytest exit code {proc.returncode}"


def run_mutant(m: Mutant, snapshot: Path) -> str:
    """'killed by' for the table: the first failing test, or SURVIVED."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = Path(tmp)
        shutil.copytree(snapshot, copy, dirs_exist_ok=True)
        apply(m, copy)
        proc = run_tests(copy, m.first_test)
    return "SURVIVED" if proc.returncode == 0 else first_failure(proc)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="only the mutants whose file or description contains this")
    p.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the run of the unmutated copy")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the copies are removed
    mutants = [m for m in MUTANTS
               if args.only is None or args.only in m.file or args.only in m.description]
    if not mutants:
        sys.exit(f"no mutant's file or description contains {args.only!r}")
    for m in mutants:  # a stale line fails now, not after an hour of runs
        mutated(m, (ROOT / m.file).read_text())
    if args.list:
        print("| file | mutation | first test file |\n|---|---|---|")
        for m in mutants:
            print(f"| {m.file} | {cell(m.description)} | {m.first_test} |")
        return 0
    # one snapshot of the working tree, which may change during an hour of runs
    snapshot_dir = tempfile.TemporaryDirectory(prefix="mutant-snapshot-")
    snapshot = Path(snapshot_dir.name)
    copy_repository(snapshot, repository_files())
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        shutil.copytree(snapshot, tmp, dirs_exist_ok=True)
        check_imports_copy(Path(tmp))
        if not args.no_baseline:
            start = time.time()
            proc = run_tests(Path(tmp), None)
            if proc.returncode != 0:
                sys.exit(f"the unmutated copy fails its fast suite ({first_failure(proc)}): "
                         f"mutants would be killed by that\n{proc.stdout[-3000:]}")
            print(f"baseline: the fast suite passes ({time.time() - start:.0f} s)\n", flush=True)
    print("| file | mutation | killed by | seconds |\n|---|---|---|---|", flush=True)
    survived = 0
    for m in mutants:
        start = time.time()
        result = run_mutant(m, snapshot)
        survived += result == "SURVIVED"
        print(f"| {m.file} | {cell(m.description)} | {cell(result)} | "
              f"{time.time() - start:.0f} |", flush=True)
    print(f"\n{len(mutants) - survived} of {len(mutants)} mutants killed")
    snapshot_dir.cleanup()
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
