"""The exception types the CLI turns into a one-line error, and the CLI's documented exit codes.

Exit codes of every `vopd-bench` command:
  0  success;
  2  bad input (`UserError`: a file, field, option, model path or server that is wrong) -- nothing written;
  3  an incomplete run (`IncompleteRun`): some requests still failed after retries; what succeeded is
     written and re-running the same command retries only the failed ones (`--allow-errors` exits 0);
  130 interrupted (Ctrl-C); re-running resumes.
"""

EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input from the user (file, field, option); the message names what is wrong."""


class IncompleteRun(Exception):
    """A run wrote what succeeded but some requests still failed; the message says how many and how to retry."""
