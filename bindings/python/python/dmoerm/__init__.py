"""DMoERM reward models in Python, scored by dmoerm's Rust core (CPU or GPU).

    >>> from dmoerm import RewardModel
    >>> rm = RewardModel("models/default/model.dmoerm", device="cpu")
    >>> rm.score({"prompt": "Is the sky blue?", "response": "Yes, on a clear day."})["reward"]

Results are dicts of the same shape as ``dmoerm score --json`` and the npm package:
``{"reward", "task", "task_probs", "capabilities", "truncated"}``; ``rank`` adds ``index``
and ``response``. Errors raise :class:`DmoermError`. Scoring releases the GIL, so threads
score in parallel with Python code.
"""

from ._dmoerm import DmoermError, RewardModel, __version__

__all__ = ["DmoermError", "RewardModel", "__version__"]
