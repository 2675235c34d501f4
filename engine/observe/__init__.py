"""What operators watch: progress, log lines, the metrics file and notifications.

Adapters used by the entry point around runs; the run service knows none of them (it calls
a progress callback and returns a report, from which ``engine.runs.summary`` makes the
ids-and-counts summary these modules render).
"""
