"""A tiny durably app for the monitor's live tests, run in another process.

`python monitor_live_app.py GATE` triggers one run, prints its id, waits until the file
GATE exists, then executes the run. The root comes from `$DURABLY_ROOT`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pydantic import BaseModel

from durably import Durably, Step, define_job


class LiveIn(BaseModel):
    steps: int


@define_job(name="live-demo", input=LiveIn)
def live_demo(step: Step, payload: LiveIn) -> dict[str, int]:
    """Runs `steps` tiny steps, reporting progress and logging once."""
    for i in range(payload.steps):
        step.run(f"step-{i}", lambda i=i: i)
        step.progress(i + 1, payload.steps, f"step {i}")
    step.log.info("all steps done")
    return {"steps": payload.steps}


durably = Durably(jobs=[live_demo], fsync=False, polling_interval=0.05)

if __name__ == "__main__":
    gate = Path(sys.argv[1])
    run = durably.jobs["live-demo"].trigger({"steps": 3}, labels={"origin": "other-process"})
    print(run.id, flush=True)
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    durably.process_until_idle()
