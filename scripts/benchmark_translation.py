"""Training speed of awd_lstm_translation against fairseq's own `lstm`.

Both models at examples/translation/run.sh's sizes (embeddings 128, hidden 256, one
bidirectional encoder layer, one decoder layer, tied), each with its criterion
(label smoothing 0.1; the AWD model's with AR 2 / TAR 1), Adam and clip 1, on the
real training batches of a translation data-bin (--max-tokens 2000). One update of
each in turn on the same batch, so that machine noise hits both alike: the ratio is
the figure to read. Prints target tokens/s of each and awd_over_lstm.

    OMP_NUM_THREADS=2 python scripts/benchmark_translation.py runs/translation/data-bin
"""
import argparse
import time
from argparse import Namespace

import torch
from fairseq import options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion)
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import lstm

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm_translation import AWDLSTMTranslationConfig, AWDLSTMTranslationModel

SIZES = dict(encoder_embed_dim=128, encoder_hidden_size=256, encoder_layers=1,
             encoder_bidirectional=True, decoder_embed_dim=128, decoder_hidden_size=256,
             decoder_layers=1, decoder_out_embed_dim=128)


def models(task, lstm_dropout, awd):
    args = Namespace(**SIZES, dropout=lstm_dropout, criterion="label_smoothed_cross_entropy",
                     share_decoder_input_output_embed=True)
    lstm.base_architecture(args)
    yield "lstm", lstm.LSTMModel.build_model(args, task), LabelSmoothedCrossEntropyCriterion(
        task, sentence_avg=False, label_smoothing=0.1)
    cfg = AWDLSTMTranslationConfig(**SIZES, **awd)
    yield "awd_lstm_translation", AWDLSTMTranslationModel.build_model(cfg, task), \
        ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0, label_smoothing=0.1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_bin")
    p.add_argument("--updates", type=int, default=60, help="timed updates of each model")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates first")
    p.add_argument("--lstm-dropout", type=float, default=0.2)
    args = p.parse_args()
    torch.manual_seed(1)
    # the task as fairseq-train builds it (its config's dataset fields are interpolated)
    flags = options.parse_args_and_arch(options.get_training_parser(), [
        args.data_bin, "--task", "translation", "-s", "de", "-t", "en", "--arch", "lstm"])
    task = tasks.setup_task(convert_namespace_to_omegaconf(flags).task)
    task.load_dataset("train")
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=2000,
                                      seed=1).next_epoch_itr(shuffle=True)
    awd = dict(weight_drop=0.2, embed_dropout=0.1, input_dropout=0.2, hidden_dropout=0.0,
               dropout=0.3)
    runs = []
    for name, model, criterion in models(task, args.lstm_dropout, awd):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        runs.append({"name": name, "model": model, "criterion": criterion, "opt": opt,
                     "seconds": 0.0, "tokens": 0})
    print(f"lstm dropout {args.lstm_dropout}; awd_lstm_translation {awd}")
    for i, sample in zip(range(args.warmup + args.updates), batches):
        for run in runs:
            start = time.perf_counter()
            run["opt"].zero_grad()
            loss, sample_size, _ = run["criterion"](run["model"], sample)
            (loss / sample_size).backward()
            torch.nn.utils.clip_grad_norm_(run["model"].parameters(), 1.0)
            run["opt"].step()
            if i >= args.warmup:
                run["seconds"] += time.perf_counter() - start
                run["tokens"] += sample["ntokens"]
    speed = {run["name"]: run["tokens"] / run["seconds"] for run in runs}
    for name, tokens_per_s in speed.items():
        print(f"{name}: {tokens_per_s:,.0f} target tokens/s")
    print(f"awd_over_lstm {speed['awd_lstm_translation'] / speed['lstm']:.3f}")


if __name__ == "__main__":
    main()
