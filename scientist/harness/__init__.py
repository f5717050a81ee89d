"""The judge-learner harness: variant code never runs in the process that scores it.

`wire` is the message format (names, plain values and raw arrays; no pickle), `judge` the
trusted side a seed's protected `evaluate.py` uses, `learner` the untrusted side a seed's
protected `learner.py` uses to serve the variant's code. The framework starts both
processes, each in its own sandbox, and gives them a socket folder in common
(`scientist.evaluator`). Standard library and NumPy only.
"""
