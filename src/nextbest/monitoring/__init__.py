"""Monitoring: what served decisions did (outcomes, lift against the control group, calibration), how far
the model's inputs have moved from training, and the alerts a scheduler acts on (`nextbest monitor`).

Nothing is imported here: the scorer imports `nextbest.monitoring.reference`, and the monitor itself
imports the scorer, so each module is imported by its full name.
"""
