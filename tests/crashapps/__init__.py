"""Helpers for the process-level tests (crash, races, bad input, invariants).

``zygote`` forks children from one pre-imported, single-threaded process (fast and
fork-safe); ``killhook`` SIGKILLs a process at its N-th file-system call; ``jobs`` holds
the job definitions and the functions the children run.
"""
