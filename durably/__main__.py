"""``python -m durably``: the ``durably`` command line."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
