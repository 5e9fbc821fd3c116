"""`python -m testtool` (and the `arterys-testtool` command): see testtool.cli."""

import sys

from testtool import cli


def main() -> int:
    try:
        return cli.main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
