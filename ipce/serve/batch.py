"""Server-side batching for `ipce serve`: one worker thread owns the scorer; requests put their
images on a queue and wait on futures. The worker takes what is queued, waits at most `max_wait`
seconds for more until the batch holds `batch_size` images, scores the batch in one call and
hands each request its own scores back. Anything else that needs the model (the page's ranking,
a quality map) runs on the same thread through `call`, so the model is never used by two threads.

An image's views (crops and global view, ipce.models.views) are made by the thread that submits
it, while the worker scores the batch before: the same split as `ipce predict`'s loader workers
and its model. At most `4 * batch_size` images wait with their views made; a submitter blocks
until the worker frees a place."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from PIL import Image

from ipce.models.views import make_views


@dataclass
class _Item:
    """One image's views, to score against one prompt."""
    views: dict  # ViewConfig -> (crops [P, 3, 224, 224], global view [3, 224, 224])
    prompt: str
    generator: str | None
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    """A function to run on the worker thread."""
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """Scores images from many threads or requests in shared batches (see the module's text)."""

    def __init__(self, scorer, batch_size: int | None = None, max_wait: float = 0.005):
        self.scorer = scorer
        self.batch_size = batch_size or scorer.batch_size
        self.max_wait = max_wait
        self.batches = 0  # batches scored so far (tests read it)
        self._places = threading.BoundedSemaphore(4 * self.batch_size)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ipce-scorer", daemon=True)
        self._thread.start()

    def score(self, image: Image.Image, prompt: str, generator: str | None = None) -> Future:
        """A future of the score of RGB `image` against `prompt`, on the scorer's scale. Makes the
        image's views in the calling thread (blocking while 4 batches' worth wait)."""
        self._places.acquire()
        try:
            views = {cfg: make_views(image, cfg) for cfg in self.scorer.view_configs}
        except BaseException:
            self._places.release()
            raise
        item = _Item(views, prompt, generator)
        self._queue.put(item)
        return item.future

    def call(self, fn: Callable[[], Any]) -> Future:
        """A future of `fn()`, run on the worker thread between batches."""
        job = _Call(fn)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        held = None  # a job taken while filling a batch that was not an image: it runs next
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is _STOP:
                return
            if isinstance(job, _Call):
                if job.future.set_running_or_notify_cancel():
                    _settle(job.future, job.fn)
                continue
            batch = [job]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if not isinstance(nxt, _Item):
                    held = nxt
                    break
                batch.append(nxt)
            try:
                self._score([item for item in batch if item.future.set_running_or_notify_cancel()])
            finally:
                for _ in batch:
                    self._places.release()

    def _score(self, batch: list[_Item]) -> None:
        if not batch:
            return
        self.batches += 1
        try:
            scores = self._scores(batch)
        except Exception:  # one bad item must not fail the others: score them one by one
            for item in batch:
                _settle(item.future, lambda item=item: self._scores([item])[0])
            return
        for item, score in zip(batch, scores):
            item.future.set_result(score)

    def _scores(self, batch: list[_Item]) -> list[float]:
        views = {cfg: (torch.stack([i.views[cfg][0] for i in batch]), torch.stack([i.views[cfg][1] for i in batch]))
                 for cfg in self.scorer.view_configs}
        combined, _ = self.scorer.score_views(views, [i.prompt for i in batch], [i.generator for i in batch])
        return combined.tolist()


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except Exception as exc:  # handed to the waiting request, which turns it into its error
        future.set_exception(exc)
