#!/usr/bin/env bash
# German -> English on the shipped Tatoeba pairs: fairseq's own `lstm` with its
# plain dropout against `awd_lstm_translation` (AWD-LSTM regularisation), each
# trained with Adam and with SGD (NT-ASGD for the AWD model), at the same budget:
# data, sizes, batch, epochs. Prints one table (BLEU and chrF of the best checkpoint
# by validation loss, detokenized, by sacrebleu; median training tokens/s over the
# epochs; parameters) and writes it to $OUT/results.md. About 75 minutes on 2 CPU
# cores.
#
#   bash examples/translation/run.sh               # EPOCHS=10 EMB=256 HID=512
#   EPOCHS=2 LINES=5000 bash examples/translation/run.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-runs/translation}
EPOCHS=${EPOCHS:-10}
EMB=${EMB:-256}
HID=${HID:-512}
rm -rf "$OUT"
mkdir -p "$OUT"

python scripts/prepare_translation.py data/tatoeba-de-en de en "$OUT/tok" ${LINES:+--lines $LINES}
fairseq-preprocess --source-lang de --target-lang en --trainpref "$OUT/tok/train" \
    --validpref "$OUT/tok/valid" --testpref "$OUT/tok/test" --destdir "$OUT/data-bin" \
    --thresholdsrc 2 --thresholdtgt 2 --workers 2

SIZES=(--encoder-embed-dim "$EMB" --encoder-hidden-size "$HID" --encoder-layers 1
       --encoder-bidirectional --decoder-embed-dim "$EMB" --decoder-hidden-size "$HID"
       --decoder-layers 1 --decoder-out-embed-dim "$EMB")
BUDGET=(--task translation --source-lang de --target-lang en --max-tokens 2000
        --max-epoch "$EPOCHS" --cpu --seed 1 --log-format simple --log-interval 100
        --no-epoch-checkpoints)

train() {  # name, then the model's own flags
    local name=$1; shift
    fairseq-train "$OUT/data-bin" --user-dir fairseq_awd "${BUDGET[@]}" "${SIZES[@]}" \
        --save-dir "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.train.log"
    fairseq-generate "$OUT/data-bin" --user-dir fairseq_awd --task translation \
        --source-lang de --target-lang en --path "$OUT/$name/checkpoint_best.pt" \
        --beam 5 --batch-size 128 --cpu --tokenizer moses --scoring sacrebleu \
        > "$OUT/$name.generate.log"
    # Detokenized hypotheses in corpus order, scored against the raw references.
    grep ^D- "$OUT/$name.generate.log" | sed 's/^D-//' | sort -n | cut -f3 > "$OUT/$name.hyp"
}

LSTM=(--arch lstm --share-decoder-input-output-embed --dropout 0.2
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1)
AWD=(--arch awd_lstm_translation --weight-drop 0.2 --embed-dropout 0.1 --input-dropout 0.2
     --hidden-dropout 0.2 --dropout 0.3 --criterion ar_tar_cross_entropy
     --label-smoothing 0.1)
ADAM=(--optimizer adam --lr 0.001 --clip-norm 1)
# SGD was unstable in its first epoch without a warm-up here (examples/translation/README.md).
SGD=(--lr 10 --clip-norm 1 --lr-scheduler fixed --warmup-updates 150)
train lstm "${LSTM[@]}" "${ADAM[@]}"
train lstm_sgd "${LSTM[@]}" --optimizer sgd "${SGD[@]}"
train awd_lstm_translation "${AWD[@]}" --optimizer nt_asgd --nonmono 2 --weight-decay 1.2e-6 \
    "${SGD[@]}"
train awd_lstm_translation_adam "${AWD[@]}" "${ADAM[@]}"

python - "$OUT" <<'EOF' | tee "$OUT/results.md"
import re, statistics, sys
from pathlib import Path
import sacrebleu
out = Path(sys.argv[1])
refs = [Path("data/tatoeba-de-en/test.en").read_text(encoding="utf-8").splitlines()]
print("| model | BLEU | chrF | train tokens/s | parameters |")
print("|---|---:|---:|---:|---:|")
for name in ("lstm", "lstm_sgd", "awd_lstm_translation", "awd_lstm_translation_adam"):
    hyps = (out / f"{name}.hyp").read_text(encoding="utf-8").splitlines()
    log = (out / f"{name}.train.log").read_text()
    wps = [float(x) for x in re.findall(r"\| train \| .*? wps ([\d.]+)", log)]
    params = re.search(r"num\. shared model params: ([\d,]+)", log).group(1)
    bleu = sacrebleu.corpus_bleu(hyps, refs).score
    chrf = sacrebleu.corpus_chrf(hyps, refs).score
    print(f"| {name} | {bleu:.2f} | {chrf:.2f} | {statistics.median(wps):,.0f} | {params} |")
EOF
