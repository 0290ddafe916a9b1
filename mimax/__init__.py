"""mimax: run and analyse hyperparameter studies of MI-maximising representation learning."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``mimax.register`` without making ``import mimax`` pull in torch.
    if name == "register":
        from mimax.trainables.plugins import register

        return register
    raise AttributeError(f"module 'mimax' has no attribute {name!r}")
