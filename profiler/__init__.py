"""fntax: how much of what a serverless function pays for is the operating system."""

__version__ = "0.1.0"
