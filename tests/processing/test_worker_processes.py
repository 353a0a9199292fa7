"""`fresh_process_map`: in order, one fresh process a job, errors raised here, and no hang after a video."""

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from xmodal.processing.worker_processes import fresh_process_map


def _slow_square(job):
    time.sleep(0.2 if job % 2 == 0 else 0.0)  # even jobs finish after the odd ones started beside them
    return job * job, os.getpid()


def _fail_on_three(job):
    if job == 3:
        raise ValueError(f"job {job} is bad")
    return job


def _die_on_two(job):
    if job == 2:
        os._exit(7)
    return job


@pytest.mark.parametrize("num_proc", [1, 2, 3])
def test_results_come_in_job_order_each_from_its_own_process(num_proc):
    results = list(fresh_process_map(_slow_square, list(range(6)), num_proc))
    assert [square for square, _ in results] == [0, 1, 4, 9, 16, 25]
    pids = [pid for _, pid in results]
    assert len(set(pids)) == 6 and os.getpid() not in pids
    assert list(fresh_process_map(_slow_square, [], num_proc)) == []


def test_a_job_exception_is_raised_here_with_its_type_and_message():
    with pytest.raises(ValueError, match="job 3 is bad"):
        list(fresh_process_map(_fail_on_three, list(range(5)), 2))
    assert not multiprocessing.active_children()


def test_a_worker_that_dies_is_named_with_its_exit_code():
    with pytest.raises(RuntimeError, match=r"worker process of job 2 died without an answer \(exit code 7\)"):
        list(fresh_process_map(_die_on_two, list(range(4)), 2))
    assert not multiprocessing.active_children()


def test_closing_early_stops_the_workers():
    results = fresh_process_map(_slow_square, list(range(8)), 2)
    assert next(results)[0] == 0
    results.close()
    assert not multiprocessing.active_children()


AFTER_A_VIDEO = """
import numpy as np, av
from xmodal.processing.worker_processes import fresh_process_map

def convert(job):  # what a video build's worker does with every frame
    frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), job, np.uint8), format="rgb24")
    return int(frame.reformat(format="yuv420p").to_ndarray()[0, 0])

if __name__ == "__main__":
    # PyAV keeps this thread's libswscale context (with its own threads) for later conversions
    convert(0)
    print(list(fresh_process_map(abs, [-1, -2, -3, -4, -5], 2)), list(fresh_process_map(convert, [0, 255, 0], 2)))
"""


def test_workers_start_after_a_video_was_converted_in_this_thread():
    """With `multiprocessing.Pool(maxtasksperchild=1)` every replacement worker hung here, forever; forked by this
    thread, a worker hung in its first conversion until it set the inherited converter aside."""
    done = subprocess.run([sys.executable, "-c", AFTER_A_VIDEO], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3, 4, 5] [16, 235, 16]"  # video-range luma of black and white
