#!/usr/bin/env bash
# German -> English on 12,000 of the shipped Tatoeba pairs (LINES; the full
# valid and test splits): fairseq's own `lstm` against
# `awd_lstm_translation` (the same architecture with the AWD-LSTM regularisation),
# both with Adam, each tuned on the validation split, then each best setting on
# SEEDS; an NT-ASGD row beside them. Every run trains to early stopping (the same
# --patience 3 and --max-epoch 40 for all), is scored from its best checkpoint by
# validation loss with beam 5, and the tables (results.py) go to $OUT/results.md.
# JOBS runs at a time, one thread each (on 2 cores, two single-threaded runs get
# more done than one run on two threads).
#
#   bash examples/translation/run.sh              # the tables
#   QUICK=1 bash examples/translation/run.sh      # a quick look: 3,000 pairs, 2 epochs, 1 seed
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/translation}
SEEDS=${SEEDS:-1 2 3}
EMB=${EMB:-128}
HID=${HID:-256}
if [ -n "${QUICK:-}" ]; then LINES=${LINES:-3000}; EPOCHS=${EPOCHS:-2}; SEEDS=1; fi
LINES=${LINES:-12000}
EPOCHS=${EPOCHS:-40}
PATIENCE=${PATIENCE:-3}
rm -rf "$OUT"
mkdir -p "$OUT"

python scripts/prepare_translation.py data/tatoeba-de-en de en "$OUT/tok" --lines "$LINES"
fairseq-preprocess --source-lang de --target-lang en --trainpref "$OUT/tok/train" \
    --validpref "$OUT/tok/valid" --testpref "$OUT/tok/test" --destdir "$OUT/data-bin" \
    --thresholdsrc 2 --thresholdtgt 2 --workers 2

SIZES=(--encoder-embed-dim "$EMB" --encoder-hidden-size "$HID" --encoder-layers 1
       --encoder-bidirectional --decoder-embed-dim "$EMB" --decoder-hidden-size "$HID"
       --decoder-layers 1 --decoder-out-embed-dim "$EMB")
BUDGET=(--task translation --source-lang de --target-lang en --max-tokens 2000
        --max-epoch "$EPOCHS" --patience "$PATIENCE" --cpu --log-format simple
        --log-interval 100 --no-epoch-checkpoints --no-last-checkpoints)
ADAM=(--optimizer adam --lr 0.001 --clip-norm 1)

train() {  # run name, seed, then the model's own flags
    local name=$1 seed=$2; shift 2
    fairseq-train "$OUT/data-bin" --user-dir fairseq_awd "${BUDGET[@]}" "${SIZES[@]}" \
        --seed "$seed" --save-dir "$OUT/$name" "$@" > "$OUT/$name.train.log" 2>&1
    fairseq-generate "$OUT/data-bin" --user-dir fairseq_awd --task translation \
        --source-lang de --target-lang en --path "$OUT/$name/checkpoint_best.pt" \
        --beam 5 --batch-size 128 --cpu --tokenizer moses > "$OUT/$name.generate.log" 2>&1
    # Detokenized hypotheses in corpus order, scored against the raw references.
    grep ^D- "$OUT/$name.generate.log" | sed 's/^D-//' | sort -n | cut -f3 > "$OUT/$name.hyp"
    rm -r "${OUT:?}/$name"
    echo "$name: $(grep -o 'best_loss [0-9.]*' "$OUT/$name.train.log" | tail -1)"
}

queue() {  # train in the background once fewer than JOBS runs are going
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    train "$@" &
}

# The grids, tuned with the first seed: fairseq's `lstm` (one dropout for all its
# places, the usual knob) and the AWD model's regularisation at three strengths,
# and the middle one without AR/TAR.
declare -A SETTING=(
    [lstm_d0.1]="--dropout 0.1" [lstm_d0.2]="--dropout 0.2" [lstm_d0.3]="--dropout 0.3"
    [awd_light]="--weight-drop 0.1 --embed-dropout 0.05 --input-dropout 0.1 --dropout 0.2"
    [awd_mid]="--weight-drop 0.2 --embed-dropout 0.1 --input-dropout 0.2 --dropout 0.3"
    [awd_strong]="--weight-drop 0.3 --embed-dropout 0.1 --input-dropout 0.3 --dropout 0.4"
    [awd_mid_no_ar_tar]="--weight-drop 0.2 --embed-dropout 0.1 --input-dropout 0.2 --dropout 0.3
                         --ar-alpha 0 --tar-beta 0"
)
LSTM=(--arch lstm --share-decoder-input-output-embed
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1)
# one decoder layer: --hidden-dropout has no place to act; AR 2 / TAR 1 are the paper's
AWD=(--arch awd_lstm_translation --hidden-dropout 0 --criterion ar_tar_cross_entropy
     --label-smoothing 0.1 --ar-alpha 2 --tar-beta 1)
first=${SEEDS%% *}
for name in lstm_d0.1 lstm_d0.2 lstm_d0.3; do
    # shellcheck disable=SC2086
    queue "$name.s$first" "$first" "${LSTM[@]}" ${SETTING[$name]} "${ADAM[@]}"
done
for name in awd_light awd_mid awd_strong awd_mid_no_ar_tar; do
    # shellcheck disable=SC2086
    queue "$name.s$first" "$first" "${AWD[@]}" ${SETTING[$name]} "${ADAM[@]}"
done
wait
best_lstm=$(python examples/translation/results.py "$OUT" --best lstm_)
best_awd=$(python examples/translation/results.py "$OUT" --best awd_)
for seed in ${SEEDS#"$first"}; do
    # shellcheck disable=SC2086
    queue "$best_lstm.s$seed" "$seed" "${LSTM[@]}" ${SETTING[$best_lstm]} "${ADAM[@]}"
    # shellcheck disable=SC2086
    queue "$best_awd.s$seed" "$seed" "${AWD[@]}" ${SETTING[$best_awd]} "${ADAM[@]}"
done
# NT-ASGD with the tuned regularisation: SGD needs a warm-up here (README)
# shellcheck disable=SC2086
queue "nt_asgd.s$first" "$first" "${AWD[@]}" ${SETTING[$best_awd]} --optimizer nt_asgd \
    --nonmono 2 --weight-decay 1.2e-6 --lr 10 --clip-norm 1 --lr-scheduler fixed \
    --warmup-updates 150
wait
python examples/translation/results.py "$OUT" --final "$best_lstm" "$best_awd" nt_asgd \
    | tee "$OUT/results.md"
