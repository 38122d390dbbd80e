"""Approaches: plain classifiers (products + taxonomy + the models' outputs -> top-k categories) and the
registry the pipeline builds its assets, jobs, commands and reports from."""
