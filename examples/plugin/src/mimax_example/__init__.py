"""An example mimax plugin: see components.py and mimax's docs/EXTENDING.md."""
