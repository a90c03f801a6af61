"""The version of modeltrust: one number for the four distributions (chain, serving,
operator, cli), whose pyproject.toml files all read it from here (hatch's version
source), and for `modeltrust --version`. The chart's appVersion is kept equal to it
(tests/cli/test_version.py)."""

__version__ = "0.1.0"
