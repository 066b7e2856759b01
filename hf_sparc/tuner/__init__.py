"""The SPARC PEFT method: pruning masks as a PEFT adapter (peft type ``"SPARC"``).

Importing this package registers the method with PEFT, which is what lets
``PeftModel.from_pretrained``, ``AutoModelForCausalLM.from_pretrained(adapter_dir)`` and
``model.load_adapter`` read SPARC adapters once ``hf_sparc`` is imported.
"""

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils.peft_types import PeftType, register_peft_method

from hf_sparc.tuner.config import SparcAdapterConfig, SparcPeftType
from hf_sparc.tuner.layer import SparcLayer
from hf_sparc.tuner.model import SparcModel

__all__ = ["SparcAdapterConfig", "SparcLayer", "SparcModel", "SparcPeftType"]


def _register() -> None:
    """Register SPARC with PEFT through its public ``register_peft_method`` when PEFT knows the
    type; PEFT <= 0.21's ``PeftType`` enum is closed (it refuses any other name), so otherwise fill
    the same three tables it would fill. A second import (e.g. importlib.reload) changes nothing."""
    if PEFT_TYPE_TO_TUNER_MAPPING.get(SparcPeftType.SPARC) is not None:
        return
    if "SPARC" in PeftType.__members__:
        register_peft_method(
            name="sparc", config_cls=SparcAdapterConfig, model_cls=SparcModel, prefix=SparcModel.prefix
        )
        return
    PEFT_TYPE_TO_CONFIG_MAPPING[SparcPeftType.SPARC] = SparcAdapterConfig
    PEFT_TYPE_TO_TUNER_MAPPING[SparcPeftType.SPARC] = SparcModel
    PEFT_TYPE_TO_PREFIX_MAPPING[SparcPeftType.SPARC] = SparcModel.prefix


_register()
