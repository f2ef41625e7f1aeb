"""The first thing a script runs: a Ctrl-C while its imports load (a second or so) is one line, not
a traceback."""
import os
import signal
import sys


def quiet_ctrl_c(name):
    """For a script run as __main__ (name): until its main() takes over, Ctrl-C exits at once with
    one line (an exit, not an exception an import could swallow)."""
    if name == "__main__":
        signal.signal(signal.SIGINT, lambda *_: (
            sys.stderr.write("interrupted while starting: nothing was done\n"), os._exit(130)))
