"""Rota for Python: tasks, a client and a worker for the Rota job server."""

from .client import AsyncClient, AsyncJobHandle, Client, JobHandle, JobStatus
from .codec import DecodeError
from .errors import Discard, JobCancelled, JobFailed, JobNotFound, ResultTimeout, Retry, RotaError
from .task import Registry, Task
from .transport import Unreachable
from .context import Context
from .worker import BackgroundWorker, Worker, WorkerError

__all__ = [
    "AsyncClient", "AsyncJobHandle", "BackgroundWorker", "Client", "Context", "DecodeError", "Discard", "JobCancelled",
    "JobFailed", "JobHandle", "JobNotFound", "JobStatus", "Registry", "ResultTimeout", "Retry",
    "RotaError", "Task", "Unreachable", "Worker", "WorkerError",
]
