#!/usr/bin/python3
"""py_chain.py -- the hand-offs of `gen ! identity x K ! discard` in Python.

This is the baseline that bench/engine/run.sh puts next to sluice's engine
overhead figure: what a Python user would write to pass tiny items through a
chain of K do-nothing stages with the standard library's concurrency tools.

Every mode moves the same items: a source makes `count` tuples
(seq, name, 16-byte payload) named like gen's ("item-000001", ...), K identity
stages hand each one on unchanged, and a sink counts them (and checks the
count, so a mode that loses items fails loudly instead of looking fast).

modes:
  queue        one thread per stage, joined by queue.Queue(maxsize=128),
               put()/get() one item at a time (the textbook pattern)
  queue-batch  the same threads and queues, but items travel in lists of 64,
               like sluice's batch push/pop (fair to Python: one lock
               round-trip per 64 items)
  pool-map     ThreadPoolExecutor(2); each stage is executor.map() over the
               previous stage's results (map keeps order, like order=source)
  pool-chain   ThreadPoolExecutor(2); each item is a chain of submitted
               futures, stage k's done-callback submits stage k+1, with at
               most 128 items in flight (a semaphore plays Queue(maxsize))

Prints one line: mode, stages, items, seconds, items/s. The wall time
measured by the caller (hyperfine) includes interpreter start-up, which is a
few tens of milliseconds against runs of a second or more.
"""
import argparse
import concurrent.futures
import queue
import sys
import threading
import time

QUEUE_CAP = 128
BATCH = 64
PAYLOAD_SIZE = 16
DONE = None  # end-of-stream marker passed down the chain


def make_item(seq):
    """Item seq (0-based): what gen makes, minus the pseudo-random fill."""
    return (seq, "item-%06d" % (seq + 1), seq.to_bytes(PAYLOAD_SIZE, "little"))


def identity(item):
    return item


def run_queue(count, stages):
    """Thread per stage, Queue(maxsize=128) between them, one item per put."""
    qs = [queue.Queue(maxsize=QUEUE_CAP) for _ in range(stages + 1)]
    seen = [0]

    def source():
        put = qs[0].put
        for seq in range(count):
            put(make_item(seq))
        put(DONE)

    def stage(k):
        get, put = qs[k].get, qs[k + 1].put
        while True:
            item = get()
            if item is DONE:
                put(DONE)
                return
            put(identity(item))

    def sink():
        get, n = qs[stages].get, 0
        while get() is not DONE:
            n += 1
        seen[0] = n

    threads = [threading.Thread(target=source)]
    threads += [threading.Thread(target=stage, args=(k,)) for k in range(stages)]
    threads.append(threading.Thread(target=sink))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen[0]


def run_queue_batch(count, stages):
    """As run_queue, but every put/get moves a list of up to 64 items."""
    qs = [queue.Queue(maxsize=QUEUE_CAP) for _ in range(stages + 1)]
    seen = [0]

    def source():
        put = qs[0].put
        for start in range(0, count, BATCH):
            put([make_item(s) for s in range(start, min(start + BATCH, count))])
        put(DONE)

    def stage(k):
        get, put = qs[k].get, qs[k + 1].put
        while True:
            batch = get()
            if batch is DONE:
                put(DONE)
                return
            put([identity(item) for item in batch])

    def sink():
        get, n = qs[stages].get, 0
        while True:
            batch = get()
            if batch is DONE:
                break
            n += len(batch)
        seen[0] = n

    threads = [threading.Thread(target=source)]
    threads += [threading.Thread(target=stage, args=(k,)) for k in range(stages)]
    threads.append(threading.Thread(target=sink))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen[0]


def run_pool_map(count, stages):
    """Each stage is executor.map over the previous stage's result iterator.

    Executor.map submits its whole input before returning, so stage k+1
    starts only when stage k's results can be iterated; memory grows with
    count (one future per item per stage), which is how users meet it.
    """
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        it = (make_item(seq) for seq in range(count))
        for _ in range(stages):
            it = ex.map(identity, it)
        return sum(1 for _ in it)


def run_pool_chain(count, stages):
    """Each item is a chain of futures; at most 128 items in flight."""
    slots = threading.BoundedSemaphore(QUEUE_CAP)
    lock = threading.Lock()
    seen = [0]
    finished = threading.Event()

    with concurrent.futures.ThreadPoolExecutor(2) as ex:

        def arrive():
            with lock:
                seen[0] += 1
                if seen[0] == count:
                    finished.set()
            slots.release()

        def step(k, fut):
            item = fut.result()
            if k == stages:
                arrive()
            else:
                ex.submit(identity, item).add_done_callback(
                    lambda f, k=k: step(k + 1, f))

        for seq in range(count):
            slots.acquire()
            if stages == 0:
                make_item(seq)
                arrive()
            else:
                ex.submit(identity, make_item(seq)).add_done_callback(
                    lambda f: step(1, f))
        if count:
            finished.wait()
    return seen[0]


MODES = {
    "queue": run_queue,
    "queue-batch": run_queue_batch,
    "pool-map": run_pool_map,
    "pool-chain": run_pool_chain,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--stages", type=int, default=4, help="identity stages")
    ap.add_argument("--count", type=int, default=100000, help="items")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = MODES[args.mode](args.count, args.stages)
    dt = time.perf_counter() - t0
    if n != args.count:
        sys.exit("py_chain: %s lost items: %d of %d arrived" % (args.mode, n, args.count))
    print("%s stages=%d items=%d seconds=%.3f items_per_s=%.0f"
          % (args.mode, args.stages, n, dt, n / dt if dt > 0 else 0.0))


if __name__ == "__main__":
    main()
