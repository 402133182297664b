"""Launching many training runs: ``twm sweep``, one ``twm train`` subprocess per (game, seed).

The runs execute on this machine or as Ray tasks, and a sweep started again finishes what is left
(``twm.launch.sweep`` is the entry point). Nothing here imports torch or the trainer: every run is a
``python -m twm.cli train`` child process.
"""
