"""The LoRA safety-tuning recipe: ``train`` (the procedure, in ``recipe``) and ``export_merged`` (in ``export``).

Importing this package stays cheap (no torch): ``TrainConfig`` is part of the experiment config schema.
"""

from safemix.train.config import LoraSettings, TrainConfig

__all__ = ["LoraSettings", "TrainConfig"]
