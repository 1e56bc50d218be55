"""Bad input ends with one line naming the problem and the fix, not a stack trace."""


def fail(message: str):
    raise SystemExit(f"fairseq-awd: {message}")
