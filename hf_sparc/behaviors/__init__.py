"""Behaviours to correct: reference sets from the model's own behaviour."""

from hf_sparc.behaviors.references import BehaviorSet, behavior_references, focus_on_words

__all__ = ["BehaviorSet", "behavior_references", "focus_on_words"]
