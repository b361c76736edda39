"""Drawing concurrent sample requests together: SampleBatcher merges the requests with the same
settings that wait for a model thread into one draw, and hands each its own result.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_CAP = 2000  # names drawn at once for merged requests (SampleBatcher)


@dataclass(eq=False)
class _Waiting:
    job: object
    n: int
    wake: object  # anyio.Event: set when the result is in, or when this one is to lead the next batch
    result: object = None
    error: BaseException | None = None
    leads: bool = False


class SampleBatcher:
    """Sample requests with the same settings that arrive while the model threads are busy are
    drawn as one batch, each getting its own result.

    A batched draw costs about what one request's does (the samples of every request advance
    together, one forward pass or table lookup per character, and on these small models a
    step's cost is mostly fixed), so under load the server does several times less work per
    request. Seeded requests are merged too: each request's samples come from its own seed's
    stream (sampling.sample_streams), so a request gets the same names however it is batched,
    and no request can tell. At most `cap` names are asked for at once.

    The first request of a key leads: it waits for a model thread (`gate`), takes every request
    of its key queued by then, draws for all of them in a thread and wakes them. A request left
    in the queue (beyond `cap`) is woken to lead the next batch.
    """

    def __init__(self, gate, run_sync, cap: int):
        self.gate, self.run_sync, self.cap = gate, run_sync, cap
        self.queues: dict[tuple, list[_Waiting]] = {}

    def _pass_lead(self, key: tuple, queue: list[_Waiting]) -> None:
        if queue:
            queue[0].leads = True
            queue[0].wake.set()
        elif self.queues.get(key) is queue:
            del self.queues[key]

    async def draw(self, key: tuple, job, n: int, draw_all):
        """This request's result: draw_all(jobs) -> one result per job, in order (an exception
        instance is that job's error and fails it alone); it runs in a worker thread, once for
        the whole batch. `n`: the names `job` asks for, counted against the cap."""
        import anyio

        me = _Waiting(job, n, anyio.Event())
        queue = self.queues.setdefault(key, [])
        queue.append(me)
        if len(queue) > 1:
            try:
                await me.wake.wait()
            except BaseException:  # cancelled while waiting: drop out, handing on the lead if given it
                if me in queue:
                    queue.remove(me)
                    if me.leads:
                        self._pass_lead(key, queue)
                raise
            if not me.leads:
                if me.error is not None:
                    raise me.error
                return me.result
        try:
            await self.gate.acquire()
        except BaseException:  # cancelled while waiting: the next in line leads instead
            queue.remove(me)
            self._pass_lead(key, queue)
            raise
        try:
            batch, total = [], 0
            while queue and (not batch or total + queue[0].n <= self.cap):
                batch.append(queue.pop(0))
                total += batch[-1].n
            self._pass_lead(key, queue)
            try:
                with anyio.CancelScope(shield=True):  # the others wait on this draw: finish it
                    results = await self.run_sync(draw_all, [w.job for w in batch])
            except Exception as e:
                for w in batch:
                    w.error = e
                    w.wake.set()
                raise
        finally:
            self.gate.release()
        for w, result in zip(batch, results):
            if isinstance(result, BaseException):
                w.error = result
            else:
                w.result = result
            w.wake.set()
        if me.error is not None:
            raise me.error
        return me.result
