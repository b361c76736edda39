"""Drawing concurrent sample requests together: SampleBatcher merges unseeded requests with the
same settings that wait for a model thread into one draw, and shares the names out.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_CAP = 2000  # names drawn at once for merged requests (SampleBatcher)


@dataclass(eq=False)
class _Waiting:
    n: int
    wake: object  # anyio.Event: set when the samples are in, or when this one is to lead the next batch
    samples: list | None = None
    error: BaseException | None = None
    leads: bool = False


class SampleBatcher:
    """Unseeded sample requests with the same settings that arrive while the model threads are
    busy are drawn as one batch and shared out.

    A batched draw costs about what one request's does (sample() advances all names together,
    one forward pass per character, and on these small models a step's cost is mostly fixed),
    so under load the server does several times less work per request. Only unseeded requests
    are merged: a seeded one must give the same names whatever else is being asked, so it is
    drawn alone. A merged draw gives each request independent draws from the same distribution
    as a solo draw would, so no request can tell. At most `cap` names are drawn at once.

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

    async def draw(self, key: tuple, n: int, draw) -> list[dict]:
        """draw(total) -> `total` samples; it runs in a worker thread, once for the whole batch."""
        import anyio

        me = _Waiting(n, anyio.Event())
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
                return me.samples
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
                    samples = await self.run_sync(draw, total)
            except Exception as e:
                for w in batch:
                    w.error = e
                    w.wake.set()
                raise
        finally:
            self.gate.release()
        i = 0
        for w in batch:
            w.samples, i = samples[i:i + w.n], i + w.n
            w.wake.set()
        return me.samples
