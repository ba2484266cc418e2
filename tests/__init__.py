"""The test suite: tests/unit (fast library tests) and tests/workflow (whole-study runs)."""
