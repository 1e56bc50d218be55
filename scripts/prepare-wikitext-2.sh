#!/usr/bin/env bash
# Download WikiText-2 (word level, v1) and binarize it into data-bin/wikitext-2.
# Needs network access; set WT2_URL if the default mirror has moved.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${WT2_URL:-https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip}
mkdir -p data/wikitext-2 && cd data/wikitext-2
curl -fsSL -o wt2.zip "$URL" && unzip -q -o wt2.zip && rm wt2.zip
for split in train valid test; do mv "wikitext-2/wiki.$split.tokens" "$split.txt"; done
rm -rf wikitext-2
cd ../..
source scripts/prepare_data.sh
binarize data/wikitext-2 data-bin/wikitext-2
