"""Held-out evaluation of SAEs: metric formulas and the evaluator that runs them."""
