"""The peer of `cargo bench --bench scheduler`: no-op tasks through dask.distributed with two
worker processes of one thread each on this machine. Prints `<n> tasks/s`.

    python3 bench/python/dask_noop.py [TASKS]
"""

import sys
import time

from dask.distributed import Client, LocalCluster, wait


def noop(i):
    return i


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # Warm the workers up (imports, connections) before timing.
        wait(client.map(noop, range(100), pure=False))
        started = time.perf_counter()
        futures = client.map(noop, range(n), pure=False)
        wait(futures)
        seconds = time.perf_counter() - started
    print(f"{n / seconds:.0f} tasks/s")


if __name__ == "__main__":
    main()
