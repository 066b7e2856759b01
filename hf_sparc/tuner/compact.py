"""The compact ``adapter_config.json`` of a SPARC adapter: per-module fields grouped by layer.

In memory an adapter config keeps per-module entries (``module_counts``, ``module_shapes``,
``mask_modules``, ``module_digests``) and a regex listing every module, as PEFT expects; written
out, that is five lines per module — about 7.8 KB over 30 modules. On disk the config holds instead:

- ``modules`` = ``{template: {layer: count}}``, where a template is a module name with its layer
  number replaced by ``{}`` (a module that fits no group is a template of its own, layer ``""``);
- ``shapes`` = ``{template: [rows, columns]}``; ``mask_templates`` only where masks are keyed by
  another module (head level: the attention module);
- ``digests`` = ``{template: "digest digest ..."}`` in the layer order of ``modules``, the first
  :data:`DIGEST_CHARS` hex digits of each;
- no ``target_modules``: the regex is rebuilt from ``modules`` when read back.

The index tensors stay one per module (PEFT's and transformers' loaders both map file keys to module
buffers), stored as int32 when every index fits, and the config is written without indentation.
Configs in the per-module layout still load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DIGEST_CHARS = 8
"""Hex digits of each module digest written to the file (32 bits: a damaged file passes with
probability 2⁻³²); checked as a prefix of the full digest."""
_LAYER = re.compile(r"^(.*?\.)(\d+)(\..*)?$")


def split_layer(name: str) -> tuple[str, str]:
    """``(template, layer)``: the name with its first numeric component replaced by ``{}``, and that
    number; names without one are their own template with layer ``""``."""
    match = _LAYER.match(name)
    if match is None:
        return name, ""
    return f"{match[1]}{{}}{match[3] or ''}", match[2]


def _fill(template: str, layer: str) -> str:
    return template.replace("{}", layer, 1) if layer else template


def _layer_number(layer: str) -> int:
    return int(layer) if layer else -1


def canonical_order(names: Iterable[str]) -> list[str]:
    """Module names in the file's order: by template, then by layer number."""
    return sorted(names, key=lambda n: (split_layer(n)[0], _layer_number(split_layer(n)[1])))


def compact_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The per-module fields of a config dict (``to_dict``) rewritten in the compact layout."""
    counts, shapes = values.pop("module_counts"), values.pop("module_shapes")
    masks_of, digests = values.pop("mask_modules"), values.pop("module_digests")
    modules: dict[str, dict[str, int]] = {}
    template_shapes: dict[str, list[int]] = {}
    group_masks: dict[str, str] = {}
    for name in canonical_order(counts):
        template, layer = split_layer(name)
        mask_template, mask_layer = split_layer(masks_of.get(name, name))
        fits = (
            mask_layer == layer
            and template_shapes.get(template, shapes[name]) == shapes[name]
            and group_masks.get(template, mask_template) == mask_template
        )
        if not fits:
            template, layer, mask_template = name, "", masks_of.get(name, name)  # a group of its own
        modules.setdefault(template, {})[layer] = counts[name]
        template_shapes[template] = list(shapes[name])
        group_masks[template] = mask_template
    mask_templates = {t: m for t, m in group_masks.items() if m != t}
    values.update(modules=modules, shapes=template_shapes, mask_templates=mask_templates)
    if digests:
        values["digests"] = {
            template: " ".join(digests.get(_fill(template, layer), "-")[:DIGEST_CHARS] for layer in layers)
            for template, layers in modules.items()
        }
    values.pop("target_modules")  # rebuilt from ``modules`` when read back (target_regex)
    # unset fields take their defaults when read back
    return {k: v for k, v in values.items() if v is not None and v != {} and not (k == "soft" and v is False)}


def expand_fields(modules: dict, shapes: dict, mask_templates: dict, digests: dict) -> dict[str, dict]:
    """The per-module fields (``module_counts``, ``module_shapes``, ``mask_modules``,
    ``module_digests``) of a compact config."""
    counts, module_shapes, masks_of, module_digests = {}, {}, {}, {}
    for name, table in (("shapes", shapes), ("mask_templates", mask_templates), ("digests", digests)):
        if set(table) - set(modules):
            raise ValueError(f"SPARC adapter config: {name} names groups missing from modules.")
    for template, layers in modules.items():
        if template not in shapes:
            raise ValueError(f"SPARC adapter config: modules group {template!r} has no entry in shapes.")
        listed = digests.get(template, "").split()
        if digests and len(listed) != len(layers):
            raise ValueError(f"SPARC adapter config: digests of {template!r} do not match its layers.")
        # JSON writers may sort the layer keys as strings; the digests follow the numeric order
        for position, layer in enumerate(sorted(layers, key=_layer_number)):
            count = layers[layer]
            name = _fill(template, layer)
            counts[name], module_shapes[name] = count, list(shapes[template])
            masks_of[name] = _fill(mask_templates.get(template, template), layer)
            if listed and listed[position] != "-":
                if len(listed[position]) < DIGEST_CHARS:
                    raise ValueError(
                        f"SPARC adapter config: digest of {name} is shorter than {DIGEST_CHARS}."
                    )
                module_digests[name] = listed[position]
    return {
        "module_counts": counts, "module_shapes": module_shapes, "mask_modules": masks_of,
        "module_digests": module_digests,
    }  # fmt: skip


def target_regex(modules: dict[str, dict[str, int]]) -> str:
    """A regex matching exactly the modules of a compact ``modules`` table."""
    parts = []
    for template, layers in modules.items():
        head, _, tail = template.partition("{}")
        if "{}" not in template:
            parts.append(re.escape(template))
        else:
            numbers = "|".join(sorted(layers, key=int))
            parts.append(f"{re.escape(head)}(?:{numbers}){re.escape(tail)}")
    return "^(?:" + "|".join(parts) + ")$"
