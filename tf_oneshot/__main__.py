"""`python -m tf_oneshot COMMAND --flags`."""

import sys

from tf_oneshot.commands.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
