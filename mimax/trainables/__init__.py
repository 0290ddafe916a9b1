"""One trial: data views, encoders, critics, estimators, probes, diagnostics and the training loop.

Imports nothing from ``mimax.study``; usable without Ray or a database.
"""
