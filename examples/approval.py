"""Runs that wait: retry a flaky call, sleep, wait for an approval, invoke a child job.

Run it:

    python examples/approval.py                 # triggers a run; a worker runs it
    durably signal RUN approval --data '{"by": "ana"}'   # from another terminal

The run retries the flaky call (waiting between attempts), sleeps, then waits for the
``approval`` signal holding no worker; once approved it invokes a child job and uses its
result. Kill the worker at any point and start it again: nothing runs twice.
"""

from __future__ import annotations

import random
import sys
from datetime import timedelta

import pydantic

from durably import Durably, Retry, define_job


class Order(pydantic.BaseModel):
    order_id: str
    amount: float


class Invoice(pydantic.BaseModel):
    order_id: str
    number: str


@define_job(name="issue-invoice", input=Order, output=Invoice)
def issue_invoice(step, order: Order) -> Invoice:  # type: ignore[no-untyped-def]
    number = step.run("number", lambda: f"INV-{order.order_id.upper()}")
    return Invoice(order_id=order.order_id, number=number)


def quote(order: Order) -> float:
    if random.random() < 0.5:
        raise RuntimeError("pricing service 503")
    return round(order.amount * 1.2, 2)


@define_job(name="approve-order", input=Order, output=dict)
def approve_order(step, order: Order) -> dict[str, object]:  # type: ignore[no-untyped-def]
    price = step.run("quote", lambda: quote(order), retry=Retry(5, delay=1.0))
    step.sleep("cool-off", timedelta(seconds=3))
    approval = step.wait_for_signal("approval", timeout=timedelta(days=7))
    invoice = step.invoke("invoice", issue_invoice, order)
    return {"price": price, "approved_by": approval.get("by"), "invoice": invoice.number}


durably = Durably(jobs=[approve_order, issue_invoice], polling_interval=0.2)


def main() -> None:
    run = durably.register(approve_order).trigger({"order_id": "o-17", "amount": 99.5})
    print(f"triggered {run.id}; approve it with:")
    print(f'  durably signal {run.id} approval --data \'{{"by": "ana"}}\'')
    durably.start()
    try:
        done = durably.wait_for_run(run.id)
    except KeyboardInterrupt:
        print(f"\nstopped; the run goes on with the next worker: durably show {run.id}")
        sys.exit(130)
    finally:
        durably.stop()
    print(done.status.value, done.output)


if __name__ == "__main__":
    main()
