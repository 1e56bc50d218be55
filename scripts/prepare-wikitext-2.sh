#!/usr/bin/env bash
# Download WikiText-2 (word level, v1) and binarize it into data-bin/wikitext-2.
# Needs network access; set WT2_URL if the default mirror has moved.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare_data.sh
prepare_wikitext 2 "${WT2_URL:-https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip}"
