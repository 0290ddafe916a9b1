"""The storage layer: mimax's tables (models), their migrations, engines and URLs (db) and the study
engine's reads and writes (store). The study engine writes through it and analysis reads through it; it
imports neither, nor torch or Ray."""
