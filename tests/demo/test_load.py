"""Load: 20 concurrent gradio_client clients x 10 requests each against the real app; no request may fail.

Prints p50/p95 latency (also written to tests/artifacts/demo/load_test.json). The requests rotate
through matching, text search, image-to-caption search and captioning. The clients do not download
result images (a browser fetches those separately): the client's own work would otherwise be most of
what is measured, since the clients share the machine with the server.
"""

import json
import threading
import time

import numpy as np
import pytest
from gradio_client import Client, handle_file

CLIENTS, REQUESTS = 20, 10


def request_kinds(assets):
    image = str(assets["image"])
    return [
        lambda client: client.predict("Image", handle_file(image), None, "a big red circle\na blue square",
                                      api_name="/match"),
        lambda client: client.predict("Text", "a small green square", None, 4, None, api_name="/search_images"),
        lambda client: client.predict(handle_file(image), 3, "", api_name="/search_captions"),
        lambda client: client.predict(handle_file(image), 2, 6, api_name="/caption"),
    ]


@pytest.mark.slow
def test_twenty_concurrent_clients(server, assets, artifacts):
    kinds = request_kinds(assets)
    latencies, errors = [], []
    ready = threading.Barrier(CLIENTS + 1)
    lock = threading.Lock()

    def visitor(index):
        try:
            client = Client(server["url"], verbose=False, download_files=False)
        except Exception as error:  # counted below; the barrier must still be reached
            client = None
            errors.append(f"client {index}: {error!r}")
        ready.wait()
        for number in range(REQUESTS if client else 0):
            started = time.perf_counter()
            try:
                kinds[(index + number) % len(kinds)](client)
            except Exception as error:
                with lock:
                    errors.append(f"client {index} request {number}: {error!r}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - started

    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:3]}"
    assert len(latencies) == CLIENTS * REQUESTS
    p50, p95 = np.percentile(latencies, [50, 95])
    summary = {"clients": CLIENTS, "requests_per_client": REQUESTS, "errors": len(errors),
               "p50_s": round(float(p50), 3), "p95_s": round(float(p95), 3), "max_s": round(max(latencies), 3),
               "wall_s": round(wall, 1), "requests_per_s": round(len(latencies) / wall, 1)}
    (artifacts / "load_test.json").write_text(json.dumps(summary, indent=2))
    print(f"\nload test: {summary}")
    assert server["process"].poll() is None
