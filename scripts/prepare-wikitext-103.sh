#!/usr/bin/env bash
# Download WikiText-103 (word level, v1) and binarize it into data-bin/wikitext-103.
# Needs network access; set WT103_URL if the default mirror has moved. WORKERS sets
# fairseq-preprocess's processes (default 4): the training split has 103M words.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${WT103_URL:-https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip}
mkdir -p data/wikitext-103 && cd data/wikitext-103
curl -fsSL -o wt103.zip "$URL" && unzip -q -o wt103.zip && rm wt103.zip
for split in train valid test; do mv "wikitext-103/wiki.$split.tokens" "$split.txt"; done
rm -rf wikitext-103
cd ../..
source scripts/prepare_data.sh
binarize data/wikitext-103 data-bin/wikitext-103
