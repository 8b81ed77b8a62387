"""What the tests share: real corpus subsamples, the environment of a private run, servers
and pipelines started for real. Imported as ``spam_tests.helpers.<module>`` (and by
``benchmarks/loop_payoff.py``, which drives the loop the way its test does)."""
