"""slstt: SLSTT micro-expression recognition, from LOSO training to a live detector."""

__version__ = "0.1.0"
