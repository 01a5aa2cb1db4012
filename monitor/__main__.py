"""`python -m durably_monitor [ROOT] [--read-only] [--app module:attr] [--wait-for-root]`."""

from __future__ import annotations

import argparse

from . import run


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the monitor."""
    parser = argparse.ArgumentParser(prog="python -m durably_monitor", description=__doc__)
    parser.add_argument("root", nargs="?", help="root directory (default $DURABLY_ROOT or .durably)")
    parser.add_argument("--read-only", action="store_true", help="hide every action that writes")
    parser.add_argument("--app", help="module:attr naming a Durably instance (enables retrigger and resume)")
    parser.add_argument(
        "--wait-for-root", action="store_true", help="open on a root that does not exist yet and wait for it"
    )
    args = parser.parse_args(argv)
    run(args.root, read_only=args.read_only, app=args.app, wait_for_root=args.wait_for_root)


if __name__ == "__main__":
    main()
