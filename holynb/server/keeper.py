"""What a server keeps of its batch jobs (OpenAI's batches, Anthropic's Message Batches): the
jobs by id, newest first, and the background tasks that process them. Thread-safe."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Generic, Protocol, TypeVar


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Job = TypeVar("Job", bound=HasId)


class Keeper(Generic[Job]):
    """Jobs by id and their background tasks."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        """Keep a new job."""
        with self._lock:
            self._jobs[job.id] = job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return list(self._jobs.values())[::-1]

    def start(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
