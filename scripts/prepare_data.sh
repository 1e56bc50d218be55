# Sourced by prepare-ptb.sh, prepare-wikitext-2.sh, prepare-wikitext-103.sh and
# reproduce_wt2_slice.sh: binarize train/valid/test.txt of $1 into $2 with one
# dictionary over all three files, as the reference's corpus reader builds it (and no
# padding of the vocabulary to a multiple of 8).
binarize() {
    local src=$1 dest=$2
    python "$(dirname "${BASH_SOURCE[0]}")/check_utf8.py" "$src"/{train,valid,test}.txt || return
    cat "$src"/{train,valid,test}.txt > "$src/all.txt"
    fairseq-preprocess --only-source --dict-only --padding-factor 1 \
        --trainpref "$src/all.txt" --destdir "$dest" --workers "${WORKERS:-4}"
    fairseq-preprocess --only-source --srcdict "$dest/dict.txt" --trainpref "$src/train.txt" \
        --validpref "$src/valid.txt" --testpref "$src/test.txt" --destdir "$dest" \
        --workers "${WORKERS:-4}"
    rm "$src/all.txt"
}

# Download WikiText-$1 (word level, v1; 2 or 103) from $2 into data/wikitext-$1 and
# binarize it into data-bin/wikitext-$1. Run from the repository root.
prepare_wikitext() {
    local version=$1 url=$2 dir=data/wikitext-$1
    mkdir -p "$dir"
    curl -fsSL -o "$dir/wikitext.zip" "$url"
    unzip -q -o "$dir/wikitext.zip" -d "$dir" && rm "$dir/wikitext.zip"
    for split in train valid test; do
        mv "$dir/wikitext-$version/wiki.$split.tokens" "$dir/$split.txt"
    done
    rm -rf "$dir/wikitext-$version"
    binarize "$dir" "data-bin/wikitext-$version"
}
