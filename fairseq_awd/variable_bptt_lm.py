"""The reference implementation's language-model training loop as a fairseq task
(Merity et al. 2017, section 4.1: variable length backpropagation sequences).

Training reads `--batch-size` contiguous rows per rank front to back every epoch,
carrying the LSTM state between batches; each batch's length is drawn and the
learning rate of its update is scaled by seq_len / bptt. Validation reads its
split as `--valid-rows` rows with a state of its own, and fairseq-eval-lm reads
the test split as one stream (`--batch-size` rows, default 1), so its perplexity
is the paper's.
"""
import dataclasses
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.data import data_utils, iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingTask
from omegaconf import II

import torch

from .bptt_batches import BPTTBatches, TokenStream, eval_windows, train_windows
from .dictionary_fingerprint import load_dictionary
from .errors import fail
from .evaluation import CacheSettings, DynamicEvalSettings, EvalLM
from .safe_checkpoints import resume_from_intact
from .stream import TRAIN_STREAM

logger = logging.getLogger(__name__)


@dataclass
class VariableBPTTLMConfig(FairseqDataclass):
    data: Optional[str] = field(
        default=None, metadata={"help": "data-bin made by fairseq-preprocess --only-source"})
    bptt: int = field(default=70, metadata={"help": "mean sequence length (paper: 70)"})
    bptt_full_prob: float = field(
        default=0.95, metadata={"help": "probability of drawing around bptt; else bptt/2"})
    bptt_std: float = field(
        default=5.0, metadata={"help": "standard deviation of the drawn sequence length"})
    min_seq_len: int = field(default=5, metadata={"help": "shortest drawn sequence length"})
    max_seq_len_delta: Optional[int] = field(
        default=None, metadata={"help": "longest drawn sequence length: --bptt + this, as "
                                        "the MoS reference caps it (its default 40, "
                                        "WikiText-2 20); unset: no cap, as the AWD-LSTM "
                                        "reference"})
    valid_rows: int = field(
        default=10, metadata={"help": "rows (parallel streams) of the validation split"})
    eval_lm_rows: int = field(
        default=1, metadata={"help": "rows of fairseq-eval-lm's split when --batch-size "
                                     "is not given (paper: 1)"})
    cache_window: int = field(
        default=0, metadata={"help": "fairseq-eval-lm: the neural cache pointer over this "
                                     "many previous positions (0: off; paper: PTB 500, "
                                     "WikiText-2 3785)"})
    cache_theta: float = field(
        default=0.662, metadata={"help": "the cache's softmax scale on h_t . h_i (paper: "
                                         "PTB 0.662, WikiText-2 0.6625)"})
    cache_lambda: float = field(
        default=0.1279, metadata={"help": "weight of the cache distribution in the mixture "
                                          "(paper: PTB 0.1279, WikiText-2 0.1137)"})
    dynamic_eval: bool = field(
        default=False, metadata={"help": "fairseq-eval-lm: dynamic evaluation (Krause et "
                                         "al. 2018), a step on each window once scored"})
    dynamic_eval_lr: float = field(
        default=5e-5, metadata={"help": "dynamic evaluation's learning rate (Krause et al.'s "
                                        "AWD-LSTM setting)"})
    dynamic_eval_lambda: float = field(
        default=0.002, metadata={"help": "decay back to the trained weights"})
    dynamic_eval_epsilon: float = field(
        default=2e-5, metadata={"help": "added to the gradients' rms before dividing"})
    dynamic_eval_old_hyperparameters: bool = field(
        default=False, metadata={"help": "read lr, lambda and epsilon as the first version of "
                                         "Krause et al.'s dynamiceval.py (the MoS reference's) "
                                         "sized them, converted as their --oldhyper does"})
    dynamic_eval_bptt: int = field(
        default=5, metadata={"help": "window length of dynamic evaluation (and of its "
                                     "gradient statistics)"})
    dynamic_eval_stats_batches: int = field(
        default=0, metadata={"help": "training batches (100 rows) for the gradient "
                                     "statistics; 0: the whole training split"})
    tokens_per_sample: int = field(
        default=0, metadata={"help": "language_modeling's block size, refused here (a "
                                     "batch is --bptt tokens of each row)"})
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    update_freq: List[int] = II("optimization.update_freq")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    distributed_rank: int = II("distributed_training.distributed_rank")
    context_window: int = II("eval_lm.context_window")
    log_interval: int = II("common.log_interval")


@register_task("variable_bptt_lm", dataclass=VariableBPTTLMConfig)
class VariableBPTTLMTask(LanguageModelingTask):
    carries_lstm_state = True  # awd_lstm checks this to know evaluation is a stream

    def __init__(self, cfg, dictionary):
        super().__init__(cfg, dictionary)
        self.cfg = cfg  # LanguageModelingTask keeps it as self.args only
        # fairseq-eval-lm takes --context-window off tokens_per_sample before the task
        # exists: the field is there so that this line is reached.
        if cfg.context_window > 0:
            fail("--context-window is for block-wise scoring; variable_bptt_lm carries the "
                 "state through the whole split already: drop it")
        if cfg.tokens_per_sample:
            fail("--tokens-per-sample is language_modeling's block size; variable_bptt_lm "
                 "reads --bptt tokens of each row: use --bptt")
        if cfg.cache_window < 0:
            fail(f"--cache-window must be >= 0 (0: no cache), got {cfg.cache_window}")
        if not 0 <= cfg.cache_lambda <= 1:
            fail(f"--cache-lambda must be in [0, 1], got {cfg.cache_lambda}")
        if cfg.dynamic_eval and cfg.cache_window:
            fail("--dynamic-eval with --cache-window is not supported (the papers report them "
                 "separately): use one of them")
        if cfg.dynamic_eval and cfg.dynamic_eval_bptt < 1:
            fail(f"--dynamic-eval-bptt must be at least 1, got {cfg.dynamic_eval_bptt}")
        if cfg.bptt < cfg.min_seq_len:
            fail(f"--bptt {cfg.bptt} is below --min-seq-len {cfg.min_seq_len}")
        if cfg.max_seq_len_delta is not None and cfg.bptt + cfg.max_seq_len_delta < cfg.min_seq_len:
            fail(f"--bptt {cfg.bptt} + --max-seq-len-delta {cfg.max_seq_len_delta} is below "
                 f"--min-seq-len {cfg.min_seq_len}: no length could be drawn")
        self.base_lr = self.scaled_lr = None
        self.lr_update = None
        self.drawn = deque(maxlen=max(cfg.update_freq))

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        path = os.path.join(cfg.data or "", "dict.txt")
        if not os.path.exists(path):
            fail(f"no {path}: point the task at a data-bin made by "
                 "fairseq-preprocess --only-source")
        return cls(cfg, load_dictionary(path))

    def build_model(self, cfg, from_checkpoint=False):
        resuming = not from_checkpoint and self.cfg.restore_file == "checkpoint_last.pt"
        if resuming and self.cfg.distributed_rank == 0:
            resume_from_intact(self.cfg.save_dir)
        model = super().build_model(cfg, from_checkpoint)
        if not getattr(getattr(model, "decoder", model), "carries_streams", False):
            fail("variable_bptt_lm carries the LSTM state inside the model: use --arch "
                 "awd_lstm (or a decoder that declares carries_streams, awd_lstm.py)")
        cfg = self.cfg
        if from_checkpoint and cfg.cache_window:  # fairseq-eval-lm's extras (evaluation.py)
            return EvalLM(model, cache=CacheSettings(cfg.cache_window, cfg.cache_theta,
                                                     cfg.cache_lambda))
        if from_checkpoint and cfg.dynamic_eval:
            return EvalLM(model, dynamic=DynamicEvalSettings(
                cfg.dynamic_eval_lr, cfg.dynamic_eval_lambda, cfg.dynamic_eval_epsilon,
                self.stats_windows(), cfg.dynamic_eval_old_hyperparameters))
        return model

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        path = os.path.join(self.cfg.data, split)
        if os.path.isfile(path + ".bin") and os.path.getsize(path + ".bin") == 0:
            fail(f"split '{split}' in {self.cfg.data} is empty ({path}.bin has 0 bytes): "
                 f"give fairseq-preprocess a --{split}pref file with text")
        sentences = data_utils.load_indexed_dataset(path, self.dictionary)
        if sentences is None:
            fail(f"no preprocessed split '{split}' in {self.cfg.data}: run "
                 f"fairseq-preprocess --only-source with --{split}pref")
        tokens = torch.cat([sentences[i] for i in range(len(sentences))]).long()
        self.datasets[split] = TokenStream(tokens, split)
        logger.info(f"{split}: {len(tokens):,} tokens as one stream")

    def _iterator(self, stream, n_rows, rows_flag, windows, name, num_shards, shard_id, epoch,
                  data_buffer_size):
        """rows_flag: the flag that sets n_rows, named by the errors."""
        if n_rows < num_shards:
            fail(f"{n_rows} rows of '{stream.split}' ({rows_flag}) cannot be shared by "
                 f"{num_shards} ranks")
        rows, row_ids = stream.rows(n_rows, shard_id, num_shards)
        row_len = rows.size(1)
        if row_len <= self.cfg.min_seq_len:
            most = len(stream) // (self.cfg.min_seq_len + 1)
            fix = (f"lower {rows_flag} (the split has room for {most} rows in all)"
                   if most >= num_shards else "give the split more text")
            fail(f"split '{stream.split}' has {len(stream):,} tokens: too few for {n_rows} rows "
                 f"({rows_flag}) of more than {self.cfg.min_seq_len} tokens; {fix}")
        batches = BPTTBatches(rows, row_ids, name)
        return iterators.EpochBatchIterator(
            dataset=batches,
            collate_fn=batches.collater,
            batch_sampler=lambda dataset, ep: [[w] for w in windows(row_len, ep)],
            seed=self.cfg.seed,
            # A batch is a slice of a tensor in memory: a loader process would only
            # add its start-up (seconds per epoch and per validation) and copies.
            num_workers=0,
            epoch=epoch,
            buffer_size=data_buffer_size,
            disable_shuffling=True,  # the streams are read in order
        )

    def _eval_iterator(self, stream, n_rows, rows_flag, num_shards, shard_id,
                       data_buffer_size, bptt=None):
        """Validation and eval-lm: windows of exactly bptt, from a zero state."""
        bptt = bptt or self.cfg.bptt
        return self._iterator(stream, n_rows, rows_flag, lambda n, ep: eval_windows(n, bptt),
                              f"eval:{stream.split}", num_shards, shard_id, 1, data_buffer_size)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        if not isinstance(dataset, TokenStream):  # e.g. the hub's sentences
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch,
                data_buffer_size, disable_iterator_cache, skip_remainder_batch,
                grouped_shuffling, update_epoch_batch_itr)
        cfg = self.cfg
        if dataset.split != cfg.train_subset:
            return self._eval_iterator(dataset, cfg.valid_rows, "--valid-rows", num_shards,
                                       shard_id, data_buffer_size)
        if max_sentences is None:
            fail("variable_bptt_lm needs --batch-size: the number of rows each rank reads")
        if max_tokens is not None:
            fail("--max-tokens has no meaning for variable_bptt_lm (a batch is --batch-size "
                 "rows times a drawn length): drop it")

        def windows(row_len, ep):
            longest = None if cfg.max_seq_len_delta is None else cfg.bptt + cfg.max_seq_len_delta
            return train_windows(row_len, cfg.bptt, cfg.bptt_full_prob, cfg.bptt_std,
                                 cfg.min_seq_len, cfg.seed, ep, longest)

        return self._iterator(dataset, max_sentences * num_shards, "--batch-size", windows,
                              TRAIN_STREAM,
                              num_shards, shard_id, epoch, data_buffer_size)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None,
                           max_positions=None, num_shards=1, shard_id=0, num_workers=1,
                           data_buffer_size=10, context_window=0):
        rows_flag = "--batch-size" if batch_size else "--eval-lm-rows"
        rows = batch_size or self.cfg.eval_lm_rows
        cfg = self.cfg
        for on, flag in ((cfg.cache_window, "--cache-window"), (cfg.dynamic_eval,
                                                                 "--dynamic-eval")):
            if on and (rows != 1 or num_shards != 1):
                fail(f"{flag} scores one stream: use one row ({rows_flag} 1) on one rank")
        itr = self._eval_iterator(dataset, rows, rows_flag, num_shards, shard_id,
                                  data_buffer_size,
                                  cfg.dynamic_eval_bptt if cfg.dynamic_eval else None)
        batches = itr.next_epoch_itr(shuffle=False)
        if cfg.dynamic_eval:  # the step after scoring a window needs its targets
            batches = ({**b, "net_input": {**b["net_input"], "target": b["target"]}}
                       for b in batches)
        return iterators.CountingIterator(
            progress(batches, len(itr), cfg.log_interval), total=len(itr))

    def stats_windows(self):
        """Dynamic evaluation's gradient statistics: the training split as 100 rows
        (Krause et al.'s batch), read in windows of --dynamic-eval-bptt (views of one
        tensor on the host)."""
        cfg = self.cfg
        if cfg.train_subset not in self.datasets:
            self.load_dataset(cfg.train_subset)
        stream = self.datasets[cfg.train_subset]
        n_rows = min(100, len(stream) // (cfg.dynamic_eval_bptt + 1))
        rows, _ = stream.rows(n_rows, 0, 1)
        windows = eval_windows(rows.size(1), cfg.dynamic_eval_bptt)
        if cfg.dynamic_eval_stats_batches > 0:
            windows = windows[: cfg.dynamic_eval_stats_batches]
        batches = []
        for offset, n in windows:
            n = min(n, rows.size(1) - 1 - offset)
            batches.append((rows[:, offset : offset + n], rows[:, offset + 1 : offset + 1 + n]))
        return batches

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if not ignore_grad:
            self._scale_lr(optimizer, update_num, sample["drawn_seq_len"])
        # fairseq's dummy batch (OOM, empty rank) must not move the carried state.
        sample = with_commit(sample, not ignore_grad)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        if sample["net_input"]["stream"].name == TRAIN_STREAM:
            sample = with_commit(sample, False)  # the dummy batch fairseq kept
        return super().valid_step(sample, model, criterion)

    def _scale_lr(self, optimizer, update_num, drawn):
        """lr × seq_len / bptt for this update, as the reference does around each step.
        With --update-freq k, seq_len is the mean over the update's k batches (the
        gradient is their token-weighted mean)."""
        if update_num != self.lr_update:
            current = optimizer.get_lr()
            if current != self.scaled_lr:  # the scheduler has set a new value
                self.base_lr = current
            self.lr_update = update_num
            self.drawn.clear()
        self.drawn.append(drawn)
        self.scaled_lr = self.base_lr * sum(self.drawn) / len(self.drawn) / self.cfg.bptt
        optimizer.set_lr(self.scaled_lr)


def progress(batches, n_batches, every):
    """fairseq-eval-lm prints nothing until the end when stderr is not a terminal, and
    one stream (a 245k-token test split, batch 1) can take minutes: a line every
    `every` windows (--log-interval)."""
    start, tokens = time.perf_counter(), 0
    for i, batch in enumerate(batches, 1):
        yield batch
        tokens += batch["ntokens"]
        if i % every == 0 and i < n_batches:
            logger.info(f"eval-lm: window {i:,} of {n_batches:,}, {tokens:,} tokens, "
                        f"{tokens / (time.perf_counter() - start):,.0f} tokens/s")


def with_commit(sample, commit: bool):
    """The sample with its stream's commit set (False: a dummy batch)."""
    net_input = sample["net_input"]
    stream = dataclasses.replace(net_input["stream"], commit=commit)
    return {**sample, "net_input": {**net_input, "stream": stream}}
