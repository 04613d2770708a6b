"""Evaluation: the exact gold graph, a dataset's fit/eval parts, metrics, FLOPs, scoring a predictor,
and the downstream effect of a predicted graph on the model."""
