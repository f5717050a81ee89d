"""scientist: an AI Scientist for meta-learning research.

The loop (see DESIGN.md): select a parent from the archive, propose a hypothesis and
edits, let a human approve them if asked, commit them as a new variant, train and
evaluate it in a sandbox, score it with the seed's fixed evaluator, archive it, report.
"""

__version__ = "0.1.0"
