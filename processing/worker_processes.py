"""`fresh_process_map`: each job of a data build in a freshly forked worker process.

eSpeak carries state from one utterance to the next, so every chunk of a build is spoken (and drawn) by a new
process: that is what makes a build reproducible bit for bit whatever `num_proc` is. Workers are forked, so
they inherit this process's caches (scaled sprites), and forked by the calling thread itself. A fork made by any
other thread frees, in the child, the per-thread state of the thread that calls; `multiprocessing.Pool` forks its
replacement workers from a helper thread, so after a video had been converted in the main thread (PyAV keeps a
libswscale context per thread, whose worker threads do not survive a fork) every replacement worker hung at birth
in freeing it (tests/processing/test_worker_processes.py). A worker forked by the calling thread inherits that
context instead, and the first frame it converted hung in it, so each worker puts it aside unused
(`_set_aside_inherited_state`) and makes its own.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait


_INHERITED = []  # native state a worker inherited and must neither use nor free


def _set_aside_inherited_state() -> None:
    """In a fresh worker: keep PyAV's per-thread video reformatter (`av.video.frame._thread_local` in PyAV 18) out of
    use without freeing it. Its libswscale context waits on threads the fork did not copy: using it or freeing it
    hangs. The worker ends with `os._exit`, which frees nothing."""
    frame = sys.modules.get("av.video.frame")
    local = getattr(frame, "_thread_local", None)
    if getattr(local, "reformatter", None) is not None:
        _INHERITED.append(local.reformatter)
        local.reformatter = None  # the next conversion makes a new one, in this process


def _run_job(function, job, sender) -> None:
    """In the worker: run one job and send back (True, result) or (False, the exception or its traceback)."""
    _set_aside_inherited_state()
    try:
        sender.send((True, function(job)))
    except BaseException as error:  # handed to the parent, which raises it
        try:
            sender.send((False, error))
        except Exception:  # an exception that does not pickle: its traceback as text
            sender.send((False, RuntimeError(traceback.format_exc())))
    finally:
        sender.close()


def fresh_process_map(function: Callable, jobs: Sequence, num_proc: int = 2) -> Iterator:
    """`map(function, jobs)` in order, each job in its own freshly forked process, at most `num_proc` at a time
    (spawned where the platform cannot fork). A job's exception is raised here; a worker that dies without an
    answer raises a RuntimeError naming the job and its exit code. Closing the iterator early stops the workers."""
    if not jobs:
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    limit = max(1, min(int(num_proc), len(jobs)))
    running, finished, started, next_index = {}, {}, 0, 0
    try:
        while next_index < len(jobs):
            while started < len(jobs) and len(running) < limit:
                index, started = started, started + 1
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_run_job, args=(function, jobs[index], sender), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (index, process)
            for receiver in wait(list(running)):
                index, process = running.pop(receiver)
                try:
                    ok, value = receiver.recv()
                except EOFError:
                    process.join()
                    raise RuntimeError(f"The worker process of job {index} died without an answer "
                                       f"(exit code {process.exitcode}).") from None
                finally:
                    receiver.close()
                process.join()
                if not ok:
                    raise value
                finished[index] = value
            while next_index in finished:
                yield finished.pop(next_index)
                next_index += 1
    finally:
        for receiver, (_, process) in running.items():
            process.terminate()
            process.join()
            receiver.close()
