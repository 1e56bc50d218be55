#!/usr/bin/env bash
# The README's main job: a short AWD-LSTM training on the shipped wt2-slice, then
# fairseq-eval-lm's perplexity on its test split. A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-runs/demo}
# A fresh run each time: fairseq-preprocess refuses an existing dictionary, and
# fairseq-train would resume the last run's checkpoint_last.pt.
rm -rf "$OUT"
mkdir -p "$OUT"

fairseq-preprocess --only-source --trainpref data/wt2-slice/train.txt \
    --validpref data/wt2-slice/valid.txt --testpref data/wt2-slice/test.txt \
    --destdir "$OUT/data-bin" --workers 2

fairseq-train "$OUT/data-bin" --user-dir fairseq_awd --cpu --seed 141 \
    --task variable_bptt_lm --bptt 35 --batch-size 20 \
    --arch awd_lstm --decoder-embed-dim 200 --decoder-hidden-size 400 --input-dropout 0.5 \
    --criterion ar_tar_cross_entropy --ar-alpha 2 --tar-beta 1 \
    --optimizer nt_asgd --nonmono 5 --weight-decay 1.2e-6 --lr 30 --clip-norm 0.25 \
    --max-epoch ${MAX_EPOCH:-1} --log-format simple --log-interval 50 \
    --save-dir "$OUT/checkpoints" --no-epoch-checkpoints

# The test split as one stream (one row), the LSTM state carried through it.
fairseq-eval-lm "$OUT/data-bin" --user-dir fairseq_awd --cpu --task variable_bptt_lm \
    --bptt 35 --path "$OUT/checkpoints/checkpoint_best.pt"
