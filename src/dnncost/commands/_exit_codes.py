"""The CLI's exit codes, defined once: the commands return them and ``dnncost.cli`` documents them."""

EXIT_OK = 0  # source: POSIX, success
EXIT_FAILED = 1  # the work ran but found a problem (a failed network, a finding)
EXIT_BAD_INPUT = 2  # source: argparse's exit status for a usage error; ours for every bad input
EXIT_INTERRUPTED = 130  # source: shell convention, 128 + SIGINT (2)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK"]
