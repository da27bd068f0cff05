"""Run an :class:`MSRSolver` in a background thread with start / pause / resume / stop.

UI-agnostic (no streamlit): the page polls ``status`` and ``trace``; a CLI or notebook can use it too.
"""

from __future__ import annotations

import threading

from core.msr.solver import MSRSolver

STATUSES = ("idle", "running", "paused", "stopped", "done", "limit", "error")


class BackgroundRun:
    """``run.start()`` → ``running``; ``pause()`` → ``paused`` (``start()`` resumes);
    ``stop()`` → ``stopped`` (final); the solver finishing sets ``done`` (exact or robust) or
    ``limit`` (iteration/time limit reached; ``start()`` continues with a fresh allowance)."""

    def __init__(self, solver: MSRSolver) -> None:
        self.solver = solver
        self.status = "idle"
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._want = "running"
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _work(self) -> None:
        try:
            for _ in self.solver.run():
                pass
            with self._lock:
                if self.solver.done:
                    self.status = "done"
                elif self._want in ("paused", "stopped"):
                    self.status = self._want
                else:
                    self.status = "limit"
        except Exception as e:  # noqa: BLE001 - surfaced in the UI, never crashes the app
            with self._lock:
                self.status, self.error = "error", f"{type(e).__name__}: {e}"

    def start(self) -> None:
        with self._lock:
            if self.running or self.status in ("stopped", "done", "error"):
                return
            self._want = "running"
            self.status = "running"
            self._thread = threading.Thread(target=self._work, name="msr-bounds", daemon=True)
            self._thread.start()

    def _halt(self, want: str) -> None:
        with self._lock:
            self._want = want
        self.solver.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self.status not in ("done", "error"):
                self.status = want

    def pause(self) -> None:
        self._halt("paused")

    def stop(self) -> None:
        self._halt("stopped")

    def trace(self) -> list[dict]:
        return list(self.solver.trace)
