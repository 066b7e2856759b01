"""The SPARC PEFT method: pruning masks as a PEFT adapter (peft type ``"SPARC"``).

Importing this package registers the method with PEFT, which is what lets
``PeftModel.from_pretrained``, ``AutoModelForCausalLM.from_pretrained(adapter_dir)`` and
``model.load_adapter`` read SPARC adapters once ``hf_sparc`` is imported.
"""

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

from hf_sparc.tuner.config import SparcAdapterConfig, SparcPeftType
from hf_sparc.tuner.layer import SparcLayer
from hf_sparc.tuner.model import SparcModel

__all__ = ["SparcAdapterConfig", "SparcLayer", "SparcModel", "SparcPeftType"]

# peft.register_peft_method only accepts members of PEFT's closed PeftType enum, so fill the same
# tables it would fill. setdefault keeps a re-import (e.g. importlib.reload) harmless.
PEFT_TYPE_TO_CONFIG_MAPPING.setdefault(SparcPeftType.SPARC, SparcAdapterConfig)
PEFT_TYPE_TO_TUNER_MAPPING.setdefault(SparcPeftType.SPARC, SparcModel)
PEFT_TYPE_TO_PREFIX_MAPPING.setdefault(SparcPeftType.SPARC, SparcModel.prefix)
