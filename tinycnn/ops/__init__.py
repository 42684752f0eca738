"""Differentiable ops: each file holds Function classes (forward + backward + formulas) and their functional API."""
