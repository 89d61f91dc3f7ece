"""``python -m pbxsession``: the same as the ``pbxsession`` command."""

import sys

from pbxsession.cli import main

if __name__ == "__main__":
    sys.exit(main())
