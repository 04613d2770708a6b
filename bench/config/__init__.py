"""Configuration: which predictor configurations a profile runs (sweeps), and the profiles themselves."""
