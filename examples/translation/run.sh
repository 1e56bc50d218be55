#!/usr/bin/env bash
# German -> English on 12,000 of the shipped Tatoeba pairs (LINES; the full
# valid and test splits): fairseq's own `lstm` against `awd_lstm_translation` (the
# same architecture with the AWD-LSTM regularisation), both with Adam, each tuned by
# validation BLEU on the first seed, then each best setting on SEEDS; an NT-ASGD row
# beside them; then the ablation of the AWD regularisation (fairseq-awd-ablate, test
# BLEU per row). Every run has the same budget: the learning rate halved after 3
# epochs without a better validation loss, training stopped after 6 (--patience 6,
# at most 60 epochs); the best checkpoint by validation loss is scored with beam 5,
# and the tables (results.py) go to $OUT/results.md, the ablation's to
# $OUT/ablation/ablation.md. JOBS runs at a time, one thread each (on 2 cores, two
# single-threaded runs get more done than one run on two threads). About 4.5 hours
# on 2 cores.
#
#   bash examples/translation/run.sh              # the tables
#   QUICK=1 bash examples/translation/run.sh      # a quick look: 3,000 pairs, 2 epochs, 1 seed, no ablation
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-runs/translation}
SEEDS=${SEEDS:-1 2 3 4 5}
EMB=${EMB:-128}
HID=${HID:-256}
if [ -n "${QUICK:-}" ]; then LINES=${LINES:-3000}; EPOCHS=${EPOCHS:-2}; SEEDS=1; fi
LINES=${LINES:-12000}
EPOCHS=${EPOCHS:-60}
PATIENCE=${PATIENCE:-6}
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
        --log-interval 100 --no-epoch-checkpoints)
ADAM=(--optimizer adam --lr 0.001 --clip-norm 1 --lr-scheduler reduce_lr_on_plateau
      --lr-shrink 0.5 --lr-patience 2)

train() {  # run name, seed, then the model's own flags
    local name=$1 seed=$2; shift 2
    fairseq-train "$OUT/data-bin" --user-dir fairseq_awd "${BUDGET[@]}" "${SIZES[@]}" \
        --no-last-checkpoints --seed "$seed" --save-dir "$OUT/$name" "$@" \
        > "$OUT/$name.train.log" 2>&1
    for split in test valid; do
        local hyp="$OUT/$name.hyp" log="$OUT/$name.generate.log"
        [ "$split" = valid ] && hyp="$OUT/$name.valid.hyp" log="$OUT/$name.generate.valid.log"
        fairseq-generate "$OUT/data-bin" --user-dir fairseq_awd --task translation \
            --source-lang de --target-lang en --gen-subset "$split" \
            --path "$OUT/$name/checkpoint_best.pt" --beam 5 --batch-size 128 --cpu \
            --tokenizer moses > "$log" 2>&1
        # Detokenized hypotheses in corpus order, scored against the raw references.
        grep ^D- "$log" | sed 's/^D-//' | sort -n | cut -f3 > "$hyp"
    done
    rm -r "${OUT:?}/$name"
    echo "$name: $(grep -o 'best_loss [0-9.]*' "$OUT/$name.train.log" | tail -1)"
}

queue() {  # train in the background once fewer than JOBS runs are going
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    train "$@" &
}

# The grids, on the first seed: fairseq's `lstm` (one dropout for all its places,
# its usual knob; its decoder embedding tied to its softmax or not) and the AWD
# model's techniques (one decoder layer: no place for --hidden-dropout), from locked
# dropout alone to weight drop alone, then all of them at light values, tied and not.
ALL="--weight-drop 0.2 --embed-dropout 0.1 --input-dropout 0.1 --dropout 0.2 --ar-alpha 0.2 --tar-beta 0.1"
# around awd_all_untied: one of output dropout, embedding dropout, weight drop moved
UNTIED_LIGHT="--input-dropout 0.1 --ar-alpha 0.2 --tar-beta 0.1 --untie-embeddings"
declare -A SETTING=(
    [lstm_d0.1]="--share-decoder-input-output-embed --dropout 0.1"
    [lstm_d0.2]="--share-decoder-input-output-embed --dropout 0.2"
    [lstm_d0.3]="--share-decoder-input-output-embed --dropout 0.3"
    [lstm_d0.4]="--share-decoder-input-output-embed --dropout 0.4"
    [lstm_untied_d0.1]="--dropout 0.1" [lstm_untied_d0.2]="--dropout 0.2"
    [lstm_untied_d0.3]="--dropout 0.3"
    [awd_locked_out1]="--input-dropout 0.1 --dropout 0.1"
    [awd_locked_light]="--input-dropout 0.1 --dropout 0.2"
    [awd_locked_out3]="--input-dropout 0.1 --dropout 0.3"
    [awd_locked]="--input-dropout 0.2 --dropout 0.3"
    [awd_embed]="--embed-dropout 0.1 --input-dropout 0.1 --dropout 0.2"
    [awd_ar_tar]="--input-dropout 0.1 --dropout 0.2 --ar-alpha 0.2 --tar-beta 0.1"
    [awd_wd2_embed]="--weight-drop 0.2 --embed-dropout 0.1 --input-dropout 0.1 --dropout 0.2"
    [awd_wd3]="--weight-drop 0.3 --input-dropout 0.1 --dropout 0.2"
    [awd_wd_only]="--weight-drop 0.3 --input-dropout 0 --dropout 0"
    [awd_all]="$ALL"
    [awd_all_untied]="$ALL --untie-embeddings"
    [awd_all_untied_out0]="$UNTIED_LIGHT --weight-drop 0.2 --embed-dropout 0.1 --dropout 0"
    [awd_all_untied_out1]="$UNTIED_LIGHT --weight-drop 0.2 --embed-dropout 0.1 --dropout 0.1"
    [awd_all_untied_embed2]="$UNTIED_LIGHT --weight-drop 0.2 --embed-dropout 0.2 --dropout 0.2"
    [awd_all_untied_wd3]="$UNTIED_LIGHT --weight-drop 0.3 --embed-dropout 0.1 --dropout 0.2"
)
LSTM=(--arch lstm --criterion label_smoothed_cross_entropy --label-smoothing 0.1)
# every regulariser off unless the setting turns it on
AWD=(--arch awd_lstm_translation --criterion ar_tar_cross_entropy --label-smoothing 0.1
     --weight-drop 0 --embed-dropout 0 --hidden-dropout 0 --ar-alpha 0 --tar-beta 0)
first=${SEEDS%% *}
for name in lstm_d0.1 lstm_d0.2 lstm_d0.3 lstm_d0.4 lstm_untied_d0.1 lstm_untied_d0.2 \
            lstm_untied_d0.3; do
    # shellcheck disable=SC2086
    queue "$name.s$first" "$first" "${LSTM[@]}" ${SETTING[$name]} "${ADAM[@]}"
done
for name in awd_locked_out1 awd_locked_light awd_locked_out3 awd_locked awd_embed awd_ar_tar \
            awd_wd2_embed awd_wd3 awd_wd_only awd_all awd_all_untied awd_all_untied_out0 \
            awd_all_untied_out1 awd_all_untied_embed2 awd_all_untied_wd3; do
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
# NT-ASGD with the tuned regularisation: plain SGD at lr 3 after a warm-up (at lr 10
# it diverged here), the lr fixed so that only NT-ASGD's switch acts
# shellcheck disable=SC2086
queue "nt_asgd.s$first" "$first" "${AWD[@]}" ${SETTING[$best_awd]} --optimizer nt_asgd \
    --nonmono 2 --weight-decay 1.2e-6 --lr 3 --clip-norm 1 --lr-scheduler fixed \
    --warmup-updates 150
wait
python examples/translation/results.py "$OUT" --final "$best_lstm" "$best_awd" nt_asgd \
    | tee "$OUT/results.md"
[ -n "${QUICK:-}" ] && exit 0

# Which technique matters: every technique on at the grid's light values, then one
# removed per row, and all of them (fairseq's `lstm` without dropout); test BLEU from
# fairseq-generate's sacrebleu line.
fairseq-awd-ablate "$OUT/data-bin" --out "$OUT/ablation" --seeds "$first" --jobs "$JOBS" \
    --rows full,no-weight-drop,no-embed-dropout,no-input-dropout,no-output-dropout,no-ar,no-tar,untied,no-regularisation \
    --generate-args "--beam 5 --batch-size 128 --scoring sacrebleu --tokenizer moses" -- \
    "${BUDGET[@]}" "${SIZES[@]}" --arch awd_lstm_translation --hidden-dropout 0 \
    --criterion ar_tar_cross_entropy --label-smoothing 0.1 --weight-drop 0.2 \
    --embed-dropout 0.1 --input-dropout 0.1 --dropout 0.2 --ar-alpha 0.2 --tar-beta 0.1 \
    "${ADAM[@]}"
