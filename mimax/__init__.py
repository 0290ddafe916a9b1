"""mimax: run and analyse hyperparameter studies of MI-maximising representation learning."""

__version__ = "0.1.0"
