"""Memory and speed: bytes accounting, timers, throughput (see measure.py and run.py)."""
