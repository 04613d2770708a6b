"""Predictor families in native PyTorch, one module each."""
