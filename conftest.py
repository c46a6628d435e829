"""Root of the test run: load cachelayer's reusable fixtures for the core's and contrib's tests."""

pytest_plugins = ["cachelayer.testing.fixtures"]
