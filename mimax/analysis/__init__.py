"""Read-only analysis of a results database. Never imports Ray or ``mimax.trainables``."""
