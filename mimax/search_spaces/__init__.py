"""What to try: declarative search spaces compiled to Optuna, and the paper's experiments as presets."""
