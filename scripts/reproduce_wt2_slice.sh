#!/usr/bin/env bash
# The reference implementation's small configuration on the shipped wt2-slice, for a
# same-settings comparison: embedding 200, hidden 400, 3 layers, batch 20, bptt 35,
# lr 30, clip 0.25, dropouts 0.4/0.25/0.5/0.1, weight drop 0.5, alpha 2, beta 1,
# weight decay 1.2e-6, NT-ASGD nonmono 5; 6 epochs for seeds 141 and 1882.
# Prints the validation perplexity per epoch and fairseq-eval-lm's test perplexity.
#   EPOCHS=30 NONMONO=2 SEEDS=141 OUT=runs/wt2-slice-30 bash scripts/reproduce_wt2_slice.sh
# SOFTMAX_CUTOFFS=2800,8000 trains with the split softmax (--softmax-cutoffs); MODEL_FLAGS
# are added to fairseq-train's (e.g. "--arch awd_lstm_mos --n-experts 5 ...").
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-runs/wt2-slice}
EPOCHS=${EPOCHS:-6}
SEEDS=${SEEDS:-"141 1882"}
NONMONO=${NONMONO:-5}
SOFTMAX_CUTOFFS=${SOFTMAX_CUTOFFS:-auto}
MODEL_FLAGS=${MODEL_FLAGS:-}
# A fresh run each time: fairseq-preprocess refuses an existing dictionary, and
# fairseq-train would resume the last run's checkpoint_last.pt.
rm -rf "$OUT"
mkdir -p "$OUT"

mkdir -p "$OUT/text"
cp data/wt2-slice/{train,valid,test}.txt "$OUT/text/"
source scripts/prepare_data.sh
binarize "$OUT/text" "$OUT/data-bin" > "$OUT/preprocess.log" 2>&1

for seed in $SEEDS; do
    run="$OUT/seed$seed"
    mkdir -p "$run"
    fairseq-train "$OUT/data-bin" --user-dir fairseq_awd --cpu --seed "$seed" \
        --task variable_bptt_lm --batch-size 20 --bptt 35 \
        --arch awd_lstm --decoder-embed-dim 200 --decoder-hidden-size 400 --decoder-layers 3 \
        --dropout 0.4 --hidden-dropout 0.25 --input-dropout 0.5 --embed-dropout 0.1 \
        --weight-drop 0.5 --softmax-cutoffs "$SOFTMAX_CUTOFFS" \
        --criterion ar_tar_cross_entropy --ar-alpha 2 --tar-beta 1 \
        --optimizer nt_asgd --nonmono "$NONMONO" --lr 30 --clip-norm 0.25 \
        --weight-decay 1.2e-6 --max-epoch "$EPOCHS" --save-dir "$run" \
        --no-epoch-checkpoints --log-format simple --log-interval 100 $MODEL_FLAGS \
        > "$run/train.log" 2>&1
    fairseq-eval-lm "$OUT/data-bin" --user-dir fairseq_awd --cpu --task variable_bptt_lm \
        --bptt 35 --path "$run/checkpoint_best.pt" > "$run/eval.log" 2>&1
    echo "seed $seed: $(grep -o 'num. shared model params: [0-9,]*' "$run/train.log")"
    grep -o "epoch [0-9]* | valid on 'valid' subset | loss [0-9.]* | ar [0-9.]* | tar [0-9.]* | ppl [0-9.]*" \
        "$run/train.log" | sed -E 's/ \| (valid on .valid. subset|loss [0-9.]*|ar [0-9.]*|tar [0-9.]*)//g; s/^/  valid /'
    grep -o "NT-ASGD: .*" "$run/train.log" | sed 's/^/  /' || true
    echo "  test $(grep -o 'Perplexity: [0-9.]*' "$run/eval.log")"
done
