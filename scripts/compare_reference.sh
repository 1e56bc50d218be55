#!/usr/bin/env bash
# Seconds per epoch of fairseq-train against the reference implementation
# (salesforce/awd-lstm-lm) on the same text and flags, each run alone: the PTB recipe
# (batch 20), WikiText-2's (batch 80), and WikiText-2's with --amp (against the
# reference's fp32). Both train and validate (batch 10) every epoch; neither saves.
#
#   git clone https://github.com/salesforce/awd-lstm-lm REF
#   bash scripts/compare_reference.sh REF data/wt2-slice
#
# The reference needs two fixes on torch >= 2.6, made here in REF (once): torch.load
# of its own pickles (weights_only=False), and in weight_drop.py dropping the
# Parameter that eval mode leaves under the weight's name, which otherwise crashes
# its second epoch ("cannot assign ... as parameter 'weight_hh_l0'"). Its --cuda
# flag is inverted (store_false): it runs on the GPU without it.
# OURS_FLAGS / REF_FLAGS add flags to every run (e.g. smaller sizes for a trial).
set -euo pipefail
[ $# -eq 2 ] ||
  { echo "usage: $0 REFERENCE_CHECKOUT TEXT_DIR (train.txt, valid.txt, test.txt)" >&2; exit 2; }
REF=$(realpath "$1") TEXT=$(realpath "$2")
OUT=${OUT:-runs/compare-reference} EPOCHS=${EPOCHS:-4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f "$REF/main.py" ] && [ -f "$REF/weight_drop.py" ] || {
  echo "fairseq-awd: $REF is not a checkout of salesforce/awd-lstm-lm (no main.py," \
    "weight_drop.py): git clone https://github.com/salesforce/awd-lstm-lm and pass its" \
    "folder" >&2; exit 2; }
sed -i -e 's/torch\.load(f)$/torch.load(f, weights_only=False)/' \
  -e 's/torch\.load(fn)$/torch.load(fn, weights_only=False)/' "$REF/main.py"
grep -q "_parameters.pop(name_w" "$REF/weight_drop.py" ||
  sed -i 's/^\( *\)setattr(self\.module, name_w, w)$/\1self.module._parameters.pop(name_w, None)\n&/' \
    "$REF/weight_drop.py"

mkdir -p "$OUT"
[ -f "$OUT/bin/dict.txt" ] || fairseq-preprocess --only-source --trainpref "$TEXT/train.txt" \
  --validpref "$TEXT/valid.txt" --testpref "$TEXT/test.txt" --destdir "$OUT/bin" --workers 2 > /dev/null

ours() {  # name, flags...: seconds per epoch from fairseq's wall clock after epoch 1
  local name=$1; shift
  fairseq-train "$OUT/bin" --user-dir "$(dirname "$0")/../fairseq_awd" --task variable_bptt_lm \
    --bptt 70 --criterion ar_tar_cross_entropy --optimizer nt_asgd --lr 30 --clip-norm 0.25 \
    --weight-decay 1.2e-6 --seed 141 --max-epoch "$EPOCHS" --no-save --log-format simple \
    --log-interval 100000 --save-dir "$OUT/$name" "$@" ${OURS_FLAGS:-} > "$OUT/ours_$name.log" 2>&1 ||
    { echo "fairseq-train failed: $OUT/ours_$name.log" >&2; tail -3 "$OUT/ours_$name.log" >&2; exit 1; }
  grep -E "\| train \| epoch" "$OUT/ours_$name.log" | grep -oE "\| wall [0-9]+" | awk -v n="$EPOCHS" \
    'NR == 1 {first = $3} END {printf "%.2f", ($3 - first) / (n - 1)}'
}

ref() {  # name, flags...: the mean of its own "end of epoch | time" after epoch 1; its
  # closing test at batch 1 is not waited for
  local name=$1; shift
  (cd "$REF" && exec python main.py --data "$TEXT" --epochs "$EPOCHS" --save "$OUT/ref_$name.pt" \
    "$@" ${REF_FLAGS:-}) > "$OUT/ref_$name.log" 2>&1 &
  local pid=$!
  until [ "$(cat "$OUT/ref_$name.log" 2> /dev/null | grep -c "end of epoch")" -ge "$EPOCHS" ]; do
    kill -0 $pid 2> /dev/null ||
      { echo "the reference stopped: $OUT/ref_$name.log" >&2; tail -3 "$OUT/ref_$name.log" >&2; exit 1; }
    sleep 1
  done
  kill $pid; wait $pid 2> /dev/null || true
  grep -oE "end of epoch +[0-9]+ \| time: +[0-9.]+" "$OUT/ref_$name.log" | awk \
    'NR > 1 {sum += $NF; n++} END {printf "%.2f", sum / n}'
}

OUT=$(realpath "$OUT")
printf "%-32s %12s %12s %10s\n" recipe "ours s/ep" "ref s/ep" "ref/ours"
row() {
  awk -v r="$1" -v o="$2" -v f="$3" 'BEGIN {printf "%-32s %12s %12s %10.2f\n", r, o, f, f / o}'
}
ptb_ref=$(ref ptb --batch_size 20 --dropouti 0.4 --dropouth 0.25 --seed 141)
row "PTB, batch 20" "$(ours ptb --arch awd_lstm --batch-size 20 --input-dropout 0.4 \
  --hidden-dropout 0.25)" "$ptb_ref"
wt2_ref=$(ref wt2 --batch_size 80 --dropouth 0.2 --seed 141)
row "WikiText-2, batch 80" "$(ours wt2 --arch awd_lstm_wt2 --batch-size 80)" "$wt2_ref"
row "WikiText-2, batch 80, --amp" "$(ours wt2amp --arch awd_lstm_wt2 --batch-size 80 --amp)" "$wt2_ref"
