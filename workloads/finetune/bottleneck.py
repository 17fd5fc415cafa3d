"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), as AdapterHub defines them.

AdapterHub's ``adapters`` 1.3 (the current release) needs transformers ~=4.57 and
huggingface_hub < 1.0 (it imports ``HfFolder`` and ``transformers.utils.is_remote_url``, both
gone in transformers 5), so it cannot load next to transformers 5.x; this is the same module:
``h + W_up f(W_down h)`` on a sublayer's output, before the residual add. ``pfeiffer``
(AdapterHub ``seq_bn``): after the MLP, ReLU; ``houlsby`` (``double_seq_bn``): after attention
and after the MLP, swish. Width = hidden_size / reduction_factor; W_up starts at zero, so the
adapted model starts exactly as the base. The base's parameter names are unchanged (the adapter
is a child of the projection it follows, applied by a forward hook), so ZeRO-3 and state dicts
treat it like any module. Adapters are saved as ``bottleneck.safetensors`` +
``bottleneck_config.json``; they are not merged into the base (the non-linearity forbids it).
"""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG = "bottleneck_config.json"
WEIGHTS = "bottleneck.safetensors"
CHILD = "bottleneck"
# (projection after attention, projection after the MLP) of each family
TARGETS = {"llama": ("self_attn.o_proj", "mlp.down_proj"), "gpt2": ("attn.c_proj", "mlp.c_proj")}


def _module(hidden: int, width: int, act: str) -> Any:
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Linear(hidden, width)
            self.up = nn.Linear(width, hidden)
            self.act = nn.ReLU() if act == "relu" else nn.SiLU()
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h + self.up(self.act(self.down(h))).to(h.dtype)

    return Bottleneck()


def _hook(module: Any, args: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        return (getattr(module, CHILD)(output[0]), *output[1:])
    return getattr(module, CHILD)(output)


def add_bottlenecks(model: Any, kind: str = "pfeiffer", reduction_factor: int = 16) -> dict[str, Any]:
    """Freeze ``model`` and attach bottleneck adapters; returns the config that rebuilds them."""
    family = "gpt2" if model.config.model_type == "gpt2" else "llama"
    attn, mlp = TARGETS[family]
    suffixes = (attn, mlp) if kind == "houlsby" else (mlp,)
    hidden = model.config.hidden_size
    width = max(hidden // reduction_factor, 1)
    act = "swish" if kind == "houlsby" else "relu"
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [n for n, _ in model.named_modules() if n.endswith(suffixes)]
    if not targets:
        raise ValueError(f"method bottleneck: no {' or '.join(suffixes)} modules in this {family} model")
    dtype = next(model.parameters()).dtype
    for name in targets:
        mod = model.get_submodule(name)
        mod.add_module(CHILD, _module(hidden, width, act).to(dtype))
        mod.register_forward_hook(_hook)
    return {"bottleneck": kind, "reduction_factor": reduction_factor, "width": width, "non_linearity": act,
            "targets": targets, "model_type": model.config.model_type}


def bottleneck_state(state: dict[str, Any]) -> dict[str, Any]:
    """The adapter tensors of a (possibly ZeRO-3 consolidated) state dict."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if f".{CHILD}." in k}


def save_bottlenecks(model: Any, config: dict[str, Any], out: str, state: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    save_file(bottleneck_state(state if state is not None else model.state_dict()), os.path.join(out, WEIGHTS))
    with open(os.path.join(out, CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def is_bottleneck_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG))


def load_bottlenecks(model: Any, path: str) -> Any:
    """Attach the saved adapters at ``path`` to ``model`` (for evaluation)."""
    from safetensors.torch import load_file

    with open(os.path.join(path, CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    add_bottlenecks(model, config["bottleneck"], config["reduction_factor"])
    missing = model.load_state_dict(load_file(os.path.join(path, WEIGHTS)), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"adapter_path: {path} does not fit this model ({missing.unexpected_keys[:3]} ...)")
    return model
