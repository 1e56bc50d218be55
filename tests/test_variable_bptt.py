"""The variable_bptt_lm task: in-order rows, the seq_len draw, the lr scaling."""
import numpy as np
import pytest
import torch

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from fairseq_awd.bptt_batches import train_windows
from fairseq_awd.variable_bptt_lm import VariableBPTTLMConfig, VariableBPTTLMTask


def make_task(data_bin, **overrides):
    settings = {"data": str(data_bin), "seed": 1, "train_subset": "train", "update_freq": [1],
                "save_dir": "checkpoints", "restore_file": "checkpoint_last.pt",
                "distributed_rank": 0, "context_window": 0, "log_interval": 100}
    cfg = VariableBPTTLMConfig(**{**settings, **overrides})
    task = VariableBPTTLMTask.setup_task(cfg)
    for split in ("train", "valid", "test"):
        task.load_dataset(split)
    return task


def batches(task, split, epoch=1, **kwargs):
    itr = task.get_batch_iterator(task.dataset(split), epoch=epoch, **kwargs)
    return list(itr.next_epoch_itr(shuffle=True))  # shuffle is refused: order is kept


def test_seq_len_draw_follows_the_reference():
    windows = train_windows(300_000, 70, 0.95, 5.0, 5, seed=141, epoch=1)
    drawn = np.array([n for _, n in windows])
    assert drawn.min() >= 5
    assert 66.5 < drawn.mean() < 69  # 0.95 * 70 + 0.05 * 35, truncated as int() does
    half = (drawn < 52).mean()
    assert 0.035 < half < 0.065
    offsets = [o for o, _ in windows]
    assert offsets == list(np.cumsum([0] + list(drawn[:-1])))
    assert windows == train_windows(300_000, 70, 0.95, 5.0, 5, seed=141, epoch=1)
    assert windows != train_windows(300_000, 70, 0.95, 5.0, 5, seed=141, epoch=2)
    assert min(n for _, n in train_windows(10_000, 4, 0.95, 5.0, 5, 1, 1)) == 5


def test_the_mos_cap_on_drawn_lengths():
    """The MoS reference's seq_len = min(seq_len, bptt + max_seq_len_delta), after the
    same draws: uncapped lengths stay, the long ones are cut."""
    free = train_windows(300_000, 70, 0.95, 20.0, 5, seed=28, epoch=1)
    capped = train_windows(300_000, 70, 0.95, 20.0, 5, seed=28, epoch=1, max_len=90)
    assert max(n for _, n in free) > 90
    pairs = list(zip(free, capped))  # the k-th window of each: the k-th draw
    assert len(pairs) > 4000 and all(c == min(f, 90) for (_, f), (_, c) in pairs)


def test_training_rows_are_contiguous_and_read_in_order(data_bin):
    task = make_task(data_bin, bptt=20)
    stream = task.dataset("train").tokens
    got = batches(task, "train", max_sentences=4)
    row_len = len(stream) // 4
    assert len(got) > 10
    for prev, cur in zip(got, got[1:]):
        # batch i+1 continues batch i in every row
        assert torch.equal(cur["net_input"]["src_tokens"][:, 0], prev["target"][:, -1])
        assert cur["net_input"]["stream"].offset == (
            prev["net_input"]["stream"].offset + prev["net_input"]["src_tokens"].size(1))
    source = torch.cat([b["net_input"]["src_tokens"] for b in got], 1)
    target = torch.cat([b["target"] for b in got], 1)
    for r in range(4):
        row = stream[r * row_len : (r + 1) * row_len]
        assert torch.equal(source[r], row[: source.size(1)])
        assert torch.equal(target[r], row[1 : source.size(1) + 1])
    assert source.size(1) == row_len - 1  # the whole row is read
    lengths = {b["net_input"]["src_tokens"].size(1) for b in got}
    assert len(lengths) > 3  # variable lengths
    other_epoch = batches(task, "train", epoch=2, max_sentences=4)
    assert [b["drawn_seq_len"] for b in other_epoch] != [b["drawn_seq_len"] for b in got]


def test_validation_reads_its_own_rows_with_fixed_bptt(data_bin):
    task = make_task(data_bin, bptt=20)
    got = batches(task, "valid", max_sentences=4)  # --batch-size does not apply
    assert {b["net_input"]["src_tokens"].size(0) for b in got} == {10}
    assert [b["net_input"]["src_tokens"].size(1) for b in got[:-1]] == [20] * (len(got) - 1)
    assert {b["net_input"]["stream"].name for b in got} == {"eval:valid"}


def test_two_ranks_read_disjoint_rows_with_the_same_lengths(data_bin):
    task = make_task(data_bin, bptt=20)
    stream = task.dataset("train").tokens
    ranks = [batches(task, "train", max_sentences=3, num_shards=2, shard_id=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    assert [b["drawn_seq_len"] for b in ranks[0]] == [b["drawn_seq_len"] for b in ranks[1]]
    row_len = len(stream) // 6
    for r, got in enumerate(ranks):
        first = got[0]["net_input"]["src_tokens"]
        assert first.size(0) == 3
        assert got[0]["id"].tolist() == [3 * r, 3 * r + 1, 3 * r + 2]
        for i in range(3):
            row = 3 * r + i
            assert torch.equal(first[i], stream[row * row_len : row * row_len + first.size(1)])


def test_bad_input_gets_one_line(data_bin, tmp_path):
    with pytest.raises(SystemExit, match="--bptt 3 is below --min-seq-len 5"):
        make_task(data_bin, bptt=3)
    task = make_task(data_bin)
    with pytest.raises(SystemExit, match="needs --batch-size"):
        batches(task, "train")
    with pytest.raises(SystemExit, match="--max-tokens has no meaning"):
        batches(task, "train", max_sentences=4, max_tokens=1000)
    with pytest.raises(SystemExit, match="too few for 5000 rows"):
        batches(task, "train", max_sentences=5000)
    with pytest.raises(SystemExit, match="no preprocessed split 'valid1'"):
        task.load_dataset("valid1")
    with pytest.raises(SystemExit, match="fairseq-preprocess --only-source"):
        make_task(tmp_path)


class RecordingOptimizer:
    """Stands in for fairseq's optimizer: keeps the lr and runs backward."""

    def __init__(self, lr):
        self.lr = lr

    def get_lr(self):
        return self.lr

    def set_lr(self, lr):
        self.lr = lr

    def backward(self, loss):
        loss.backward()


def tiny_model(task):
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12)
    return AWDLSTMModel(AWDLSTMDecoder(cfg, task.dictionary))


def test_lr_is_scaled_by_seq_len_over_bptt_each_update(data_bin):
    task = make_task(data_bin, bptt=20, update_freq=[2])
    model = tiny_model(task)
    crit = ARTARCrossEntropyCriterion(task, 2.0, 1.0, 0.0)
    opt = RecordingOptimizer(30.0)
    got = batches(task, "train", max_sentences=4)
    for update, base in enumerate([30.0, 30.0, 10.0]):
        opt.set_lr(base)  # what the scheduler set after the last step
        pair = got[2 * update : 2 * update + 2]
        for sample in pair:
            task.train_step(sample, model, crit, opt, update)
        mean = sum(s["drawn_seq_len"] for s in pair) / 2
        assert opt.lr == pytest.approx(base * mean / 20)
    # a scheduler that leaves the lr alone: the base stays its last value
    task.train_step(got[6], model, crit, opt, 3)
    assert opt.lr == pytest.approx(10.0 * got[6]["drawn_seq_len"] / 20)


def carried(model, stream):
    return [t.clone() for states in model.decoder.carried.streams[stream].values()
            for pair in states for t in pair]


def test_dummy_batches_leave_the_carried_state_alone(data_bin):
    task = make_task(data_bin, bptt=20)
    model = tiny_model(task).train()
    crit = ARTARCrossEntropyCriterion(task, 2.0, 1.0, 0.0)
    train = batches(task, "train", max_sentences=4)
    opt = RecordingOptimizer(30.0)
    task.train_step(train[0], model, crit, opt, 0)
    before = carried(model, "train")
    # fairseq's dummy batch: in training (ignore_grad) and in validation
    task.train_step(train[5], model, crit, opt, 1, ignore_grad=True)
    assert opt.lr == pytest.approx(30.0 * train[0]["drawn_seq_len"] / 20)  # untouched
    model.eval()
    task.valid_step(train[3], model, crit)
    after = carried(model, "train")
    assert len(before) == len(after) and all(map(torch.equal, before, after))
    # a batch run again (OOM retry) starts from the state it started from the first time
    model.train()
    torch.manual_seed(3)
    first = task.train_step(train[1], model, crit, opt, 1)[2]["loss"]
    torch.manual_seed(3)
    assert torch.equal(task.train_step(train[1], model, crit, opt, 1)[2]["loss"], first)
