"""The one exception the analysis raises for bad input."""


class AnalysisError(ValueError):
    """Input the analysis cannot work with; the message is one line meant for the user."""
