"""Execution: dense attention references, sparse execution on a predicted graph, and timing helpers."""
