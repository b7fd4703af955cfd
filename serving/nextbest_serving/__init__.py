"""The BentoML online service and the batch scoring job of nextbest."""
