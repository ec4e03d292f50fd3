"""A followed log, bounded in time and closable from any thread (both backends use it).

A backend's log stream blocks until the workload writes; the page that follows it may go away
at any moment, and a connection must never outlive CLAWORC_LOG_FOLLOW_SECONDS. So the stream is
read in a thread of its own, and `close()` (called by whoever serves the page, from whatever
thread) shuts the source at once instead of waiting for a next line that may never come.
"""

from __future__ import annotations

import codecs
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

#: How often a waiting reader looks at its deadline and at close(), in seconds.
_TICK = 0.5


class FollowedLog(Iterator[str]):
    """Text from `chunks` (bytes or str) until they end, `seconds` pass or close() is called.

    `close_source` releases what `chunks` reads from (a socket, an HTTP response); it must wake
    a read blocked in another thread. It is called once, whichever way the follow ends.
    """

    def __init__(self, chunks: Iterable[bytes | str], seconds: float,
                 close_source: Callable[[], None]):
        self._queue: queue.Queue = queue.Queue()
        self._close_source = close_source
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._released = False
        self._deadline = time.monotonic() + seconds
        # A character split across two chunks is decoded whole, not as two replacements.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        threading.Thread(target=self._pump, args=(chunks,), daemon=True,
                         name="claworc-log-follow").start()

    def _pump(self, chunks: Iterable[bytes | str]) -> None:
        try:
            for chunk in chunks:
                if self._closed.is_set():
                    break
                self._queue.put(chunk)
        except Exception:  # noqa: BLE001 - a closed or broken stream simply ends the follow
            pass
        finally:
            self._queue.put(None)

    def __next__(self) -> str:
        while not self._closed.is_set() and (left := self._deadline - time.monotonic()) > 0:
            try:
                chunk = self._queue.get(timeout=min(left, _TICK))
            except queue.Empty:
                continue
            if chunk is None:
                break
            text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
            if text:
                return text
        self.close()
        raise StopIteration

    def close(self) -> None:
        """End the follow now; safe to call from any thread, any number of times."""
        self._closed.set()
        with self._lock:
            if self._released:
                return
            self._released = True
        with contextlib.suppress(Exception):
            self._close_source()

    @property
    def closed(self) -> bool:
        return self._released


def bounded_stream(stream, seconds: float) -> FollowedLog:
    """A FollowedLog over a blocking stream object that has close() (Docker's log stream)."""
    return FollowedLog(stream, seconds, stream.close)
