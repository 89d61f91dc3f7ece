"""Run the simulator: ``python -m pbxsession.sim --help``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
