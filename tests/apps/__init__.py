"""Everything the tests run in a child process, and the machinery that starts it.

Children import this package as ``apps`` (``tests/`` is on their ``PYTHONPATH``, see
``children.child_env``); the fork server and ``durably worker`` are given functions and
apps as ``apps.<module>:<attribute>``.

Machinery:

- ``children``: the test side: a child's environment, the fork server's client
  (``Zygote``), ``python`` children (``start_python``, ``call_argv``), ``poll``;
- ``zygote``: the fork server, which forks a child per call from one pre-imported process;
- ``call``: the same call in a fresh process (``python -m apps.call``), for ``strace``;
- ``killhook``: SIGKILL a process at its N-th file-system call, or count those calls;
- ``common``: event lines that survive a SIGKILL, file gates, posing as another host;
- ``startgate/sitecustomize.py``: holds ``durably worker``'s processes at start-up.

Apps and jobs:

- ``cli_app``: the app the ``durably`` command line and ``durably worker`` load, with
  ``broken``, ``dies_at_start``, ``elsewhere`` and ``slow_import``, its variants that
  fail to import, die while starting, have a root of their own, or import slowly;
- ``second_process``: a second process executing runs that the test process reads;
- ``crash_jobs``: workers killed at chosen points and at every file-system call, racers,
  stale owners, one child per invariant, lock contenders;
- ``durability_trace``: traces an operation's file-system calls against its
  acknowledgements (every acknowledged write durable);
- ``fault_server``: a worker under libfiu that fails the N-th call on command, and the
  "hosts" of the multi-host tests;
- ``logged_steps``: a job whose step executions are logged, and a worker that retries
  store errors (leases, faults, hostile input); ``probe``: every entry point over a
  damaged root;
- ``stalls``: workers that stop themselves (SIGSTOP) inside a step, between steps or at
  the end of a run (stalled owners, damaged records, store errors).

``tests/monitor/monitor_live_app.py``, the monitor's live app, lives with the monitor's tests.
"""
