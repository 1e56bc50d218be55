"""Tokenize a raw parallel corpus with the Moses tokenizer (sacremoses, which
fairseq's `--tokenizer moses` uses to detokenize) for fairseq-preprocess.

    python scripts/prepare_translation.py RAW_DIR SRC TGT OUT_DIR [--lines N]

RAW_DIR holds {train,valid,test}.{SRC,TGT}, one sentence a line, line i of one
language translating line i of the other. The files are checked first (present,
UTF-8, the same number of lines on both sides): a problem ends the script with one
line naming the file and the fix.
"""
import argparse
from pathlib import Path

from check_utf8 import read_lines
from sacremoses import MosesTokenizer

from fairseq_awd.errors import fail

SPLITS = ("train", "valid", "test")


def check_pair(raw: Path, src: str, tgt: str):
    present = sorted({p.suffix[1:] for p in raw.glob("train.*")})
    for lang in (src, tgt):
        if lang not in present:
            fail(f"no train.{lang} in {raw}: the languages there are {', '.join(present)}")
    for split in SPLITS:
        missing = [f"{split}.{lang}" for lang in (src, tgt) if not (raw / f"{split}.{lang}").exists()]
        if missing:
            fail(f"no {' or '.join(missing)} in {raw}: every split needs both languages")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("src")
    parser.add_argument("tgt")
    parser.add_argument("out", type=Path)
    parser.add_argument("--lines", type=int, help="use only the first N pairs of each split")
    args = parser.parse_args()
    check_pair(args.raw, args.src, args.tgt)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        sides = {lang: read_lines(args.raw / f"{split}.{lang}") for lang in (args.src, args.tgt)}
        n_src, n_tgt = (len(sides[lang]) for lang in (args.src, args.tgt))
        if n_src != n_tgt:
            fail(f"{args.raw}/{split}.{args.src} has {n_src} lines, {split}.{args.tgt} "
                 f"{n_tgt}: line i of one must translate line i of the other")
        for lang, lines in sides.items():
            tokenizer = MosesTokenizer(lang)
            with open(args.out / f"{split}.{lang}", "w", encoding="utf-8") as f:
                for line in lines[: args.lines]:
                    f.write(tokenizer.tokenize(line, escape=False, return_str=True) + "\n")
        print(f"{split}: {min(n_src, args.lines or n_src):,} pairs")


if __name__ == "__main__":
    main()
