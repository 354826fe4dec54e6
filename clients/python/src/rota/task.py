"""Tasks: a handler with its kind, queue and retry policy, registered once and shared by the
code that enqueues and the worker that runs — so the policy travels with every job."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Awaitable, Callable, Generic, Protocol, TypeVar, overload

from .codec import from_json
from .context import Context

A = TypeVar("A")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Where a task's jobs go and how they are retried."""

    queue: str = "default"
    max_attempts: int | None = None
    backoff: tuple[float, ...] | None = None
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    discard_on: tuple[type[BaseException], ...] = ()


class Task(Generic[A, R]):
    """A registered handler: ``kind``, ``options`` and the function. Enqueue it with
    ``client.enqueue(task, args)``; the handle's ``result()`` is an ``R``."""

    def __init__(self, kind: str, fn: Callable[..., Any], options: TaskOptions) -> None:
        self.kind = kind
        self.fn = fn
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError(
                f"task {kind}: the handler takes the arguments and optionally the context, "
                f"got {len(params)} parameters"
            )
        self.takes_context = len(params) == 2
        hints = typing.get_type_hints(fn)
        self.args_type: Any = hints.get(params[0].name, Any)
        self.result_type: Any = hints.get("return", Any)

    def decode_args(self, data: Any) -> A:
        return typing.cast(A, from_json(self.args_type, data))

    def decode_result(self, data: Any) -> R:
        return typing.cast(R, from_json(self.result_type, data))

    def __repr__(self) -> str:
        return f"Task({self.kind!r}, queue={self.options.queue!r})"


class TaskDecorator(Protocol):
    """What ``registry.task(...)`` returns: it turns a handler into a ``Task[A, R]`` — ``A``
    the handler's first parameter, ``R`` what it returns (awaited for an async handler)."""

    @overload
    def __call__(self, fn: Callable[[A, Context], Awaitable[R]]) -> Task[A, R]: ...
    @overload
    def __call__(self, fn: Callable[[A], Awaitable[R]]) -> Task[A, R]: ...
    @overload
    def __call__(self, fn: Callable[[A, Context], R]) -> Task[A, R]: ...
    @overload
    def __call__(self, fn: Callable[[A], R]) -> Task[A, R]: ...


class Registry:
    """The tasks of an application: ``@registry.task("images.resize", queue="media")``."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}

    def task(
        self,
        kind: str,
        *,
        queue: str = "default",
        max_attempts: int | None = None,
        backoff: list[float] | None = None,
        timeout: float | None = None,
        retry_on: tuple[type[BaseException], ...] = (),
        discard_on: tuple[type[BaseException], ...] = (),
    ) -> TaskDecorator:
        """Registers the decorated function as the handler of ``kind``."""
        if kind in self.tasks:
            raise ValueError(f"task {kind} is registered twice")
        options = TaskOptions(
            queue=queue,
            max_attempts=max_attempts,
            backoff=tuple(backoff) if backoff else None,
            timeout=timeout,
            retry_on=tuple(retry_on),
            discard_on=tuple(discard_on),
        )

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task: Task[Any, Any] = Task(kind, fn, options)
            self.tasks[kind] = task
            return task

        return typing.cast(TaskDecorator, register)

    def queues(self) -> list[str]:
        """Every queue a registered task goes to."""
        return sorted({t.options.queue for t in self.tasks.values()})
