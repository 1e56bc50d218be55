"""The recipes: the hydra configs equal the README's commands, and hydra trains."""
import re
import shlex
import subprocess
import sys

import pytest
import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import OmegaConf

from conftest import ENV, ROOT, USER_DIR, holds_the_average

RECIPES = ROOT / "examples" / "awd_lstm"


def readme_commands(prefix):
    """The shell commands of the recipes README that start with `prefix`."""
    text = (RECIPES / "README.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    return [shlex.split(b.replace("\\\n", " ")) for b in blocks if b.startswith(prefix)]


def cli_config(argv):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv[1:])
    return convert_namespace_to_omegaconf(args)


@pytest.mark.parametrize("name,data,arch", [
    ("ptb", "data-bin/ptb", "awd_lstm"), ("wt2", "data-bin/wikitext-2", "awd_lstm_wt2"),
    ("wt103", "data-bin/wikitext-103", "awd_lstm"), ("mos_ptb", "data-bin/ptb", "awd_lstm_mos"),
    ("mos_wt2", "data-bin/wikitext-2", "awd_lstm_mos_wt2")])
def test_hydra_config_equals_the_readme_command(name, data, arch):
    (command,) = [c for c in readme_commands(f"fairseq-train {data} ")
                  if "--asgd-from-start" not in c and c[c.index("--arch") + 1] == arch]
    cli = cli_config(command)
    yaml = OmegaConf.load(RECIPES / "config" / f"{name}.yaml")
    compared = 0
    for section, values in yaml.items():
        for key in values:
            if OmegaConf.is_missing(values, key):
                continue  # task.data is given on the command line
            value = values[key]
            got = cli[section][key]
            got = list(got) if OmegaConf.is_list(got) else got
            value = list(value) if OmegaConf.is_list(value) else value
            assert got == value, f"{section}.{key}: README {got!r}, {name}.yaml {value!r}"
            compared += 1
    assert compared > 30


@pytest.mark.parametrize("arch,lr", [("awd_lstm", 30.0), ("awd_lstm_mos", 25.0)])
def test_finetune_command_is_the_training_command_plus_finetune_flags(arch, lr):
    train, finetune = (cli_config(c) for c in readme_commands("fairseq-train data-bin/ptb ")
                       if c[c.index("--arch") + 1] == arch)
    for section in ("task", "model", "criterion", "dataset", "common"):
        # the task's save_dir mirrors --save-dir (for resuming from an intact checkpoint)
        differ = {k for k in train[section] if train[section][k] != finetune[section][k]}
        assert differ == ({"save_dir"} if section == "task" else set()), section
    # the MoS reference finetunes at another lr (20 -> 25)
    assert list(finetune.optimization.lr) == [lr]
    new_lr = {"lr"} if list(train.optimization.lr) != [lr] else set()
    assert {k for k in train.optimizer if train.optimizer[k] != finetune.optimizer[k]} == {
        "asgd_from_start"} | new_lr
    assert finetune.optimizer.asgd_from_start and finetune.optimization.stop_min_lr == 0
    assert finetune.checkpoint.finetune_from_model == (f"{train.checkpoint.save_dir}/"
                                                       "checkpoint_best.pt")


@pytest.mark.slow
def test_hydra_trains_in_bf16_with_nt_asgd(data_bin, tmp_path):
    cmd = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir",
           str(RECIPES / "config"), "--config-name", "ptb", f"task.data={data_bin}",
           f"common.user_dir={USER_DIR}", "common.cpu=true", "common.bf16=true",
           "common.seed=7", "model.decoder_embed_dim=32", "model.decoder_hidden_size=64",
           "optimization.max_epoch=3", "dataset.batch_size=4", "task.bptt=20",
           "optimizer.nonmono=0",
           f"checkpoint.save_dir={tmp_path / 'ck'}", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "NT-ASGD: switching to averaged SGD" in log
    ckpt = torch.load(tmp_path / "ck" / "checkpoint_last.pt")
    assert ckpt["cfg"]["common"]["bf16"]
    # the fp32 average, rounded to bf16 for the model that validated with it
    assert ckpt["last_optimizer_state"]["state"][0]["ax"].dtype == torch.float32
    assert holds_the_average(tmp_path / "ck" / "checkpoint_last.pt", torch.bfloat16)
