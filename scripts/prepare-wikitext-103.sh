#!/usr/bin/env bash
# Download WikiText-103 (word level, v1) and binarize it into data-bin/wikitext-103.
# Needs network access; set WT103_URL if the default mirror has moved. WORKERS sets
# fairseq-preprocess's processes (default 4): the training split has 103M words.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare_data.sh
prepare_wikitext 103 "${WT103_URL:-https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip}"
