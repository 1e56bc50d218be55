"""Check that text files are UTF-8 before fairseq-preprocess reads them (it crashes
on other bytes with "negative seek position -1").

    python scripts/check_utf8.py FILE...

Ends with one line naming the first file and line that is not UTF-8.
"""
import sys
from pathlib import Path

from fairseq_awd.errors import fail


def read_lines(path: Path):
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        fail(f"{path} line {line} is not UTF-8 ({e.reason}): convert the file to UTF-8 "
             f"(e.g. iconv -f latin1 -t utf-8)")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        read_lines(Path(name))
