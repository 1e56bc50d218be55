#!/usr/bin/env bash
# Download Mikolov's Penn Treebank (the reference's getdata.sh source) and binarize it
# into data-bin/ptb. Needs network access.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${PTB_URL:-http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz}
mkdir -p data/ptb && cd data/ptb
curl -fsSL "$URL" | tar -xz
for split in train valid test; do mv "simple-examples/data/ptb.$split.txt" "$split.txt"; done
rm -rf simple-examples
cd ../..
source scripts/prepare_data.sh
binarize data/ptb data-bin/ptb
