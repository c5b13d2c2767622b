"""idnode load tests and benchmarks.

Every figure is reported beside a ceiling measured in the same run.
"""
