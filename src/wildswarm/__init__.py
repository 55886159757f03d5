"""wildswarm: wildlife video analysis at cluster scale."""

__version__ = "0.1.0"
