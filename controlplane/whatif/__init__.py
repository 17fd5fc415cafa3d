"""What-if capacity planning: replay a workload through the real scheduler in simulated time.

Pure like the scheduler (no database, no HTTP): ``trace``/``history`` load a workload,
``modes`` turn each job into the request of one way of sharing GPUs, ``search`` finds the
smallest cluster that serves it, ``report.whatif`` runs every mode; ``rightsize`` is the
right-sizing rule the server uses too.
"""
