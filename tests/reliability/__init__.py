"""The reliability suite (see conftest.py); a package so that its modules have names of
their own (``reliability.conftest`` beside the suite's ``conftest``)."""
