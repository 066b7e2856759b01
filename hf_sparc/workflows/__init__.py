"""Workflows: the pruner, the correction experiment and its sweep, circuits, compression and
insight, each a sequence of the library's steps (texts → relevance → selection → masks →
adapter → evaluation → report). Nothing below :mod:`hf_sparc.workflows` imports from here."""
