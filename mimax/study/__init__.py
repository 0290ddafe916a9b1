"""How trials run and where they land: Ray Tune + Optuna, the results store, launch / resume / status."""
