"""Zero-shot composed retrieval by textual inversion: Pic2Word, SEARLE and LinCIR.

``pic2word:<ckpt>/<clip>``, ``searle:<ckpt>/<clip>``, ``lincir:<ckpt>/<clip>``, where
``<ckpt>`` is the method's published checkpoint file and ``<clip>`` a plain CLIP model name
(``hf:<dir or id>``, ``open_clip:<arch>/<weights>``, ``test/tiny-clip``).

**Name syntax.** The checkpoint is the *first* ``/``-prefix of the rest of the name that is an
existing file (unambiguous: no path can continue below a file), everything after that ``/`` is
the CLIP; ``<ckpt>::<clip>`` states the split explicitly. A non-default prompt is appended as
``?prompt=<template>`` (or given as ``create_model(name, prompt=...)``), e.g.
``searle:/w/SEARLE_ViTB32.pt/hf:openai/clip-vit-base-patch32?prompt=a photo of $ with {caption}``.

**Query.** With ``f = f_img(x)`` the CLIP image feature of the reference image *before*
normalisation (all three methods' code feeds ``encode_image(x)`` / ``image_embeds`` to the
mapping network unnormalised), the pseudo-word embedding is ``w = phi(f)``; the prompt
``P(c)`` (the template with ``{caption}`` = the condition ``c``) is tokenised, the token
embedding of the placeholder (``*`` for Pic2Word, ``$`` for SEARLE and LinCIR) is replaced by
``w`` *before* the positional embedding is added (Pic2Word and SEARLE: its first occurrence;
LinCIR: every occurrence, as in ``torch.where(text == 259, ...)``), the text transformer, final
layer norm, EOT pooling and text projection run unchanged, and::

    q = normalize(g_txt(P(c); w))            t = normalize(f_img(y))

Targets ``t`` are the CLIP's own targets: the model shares the CLIP's embedding-cache space
(:attr:`~condsim.types.ModelMeta.cache_space`), so gallery embeddings cached by a run of the
plain CLIP are reused; its query keys are salted with method + checkpoint digest + prompt
(:attr:`~condsim.types.ModelMeta.query_namespace`). Queries are composed from the cached
un-normalised feature ``f`` of the reference image (compose inputs, written in the same
image-tower pass as ``t``), so the image tower runs once per unique image.

**Mapping networks**, as their authors save them (``torch.load`` -> ``load_state_dict(strict)``):

- Pic2Word (google-research/composed_image_retrieval, ``model/model.py`` ``IM2TEXT``):
  ``layers.{i}.0`` Linear (``embed_dim`` or ``middle_dim`` -> ``middle_dim``), ``.1`` Dropout
  (0.1), ``.2`` ReLU for ``i < n_layer`` (2), then ``fc_out`` Linear (``middle_dim`` -> token
  width): ``w = W_o ReLU(W_2 ReLU(W_1 f + b_1) + b_2) + b_o``. Checkpoint: a dict whose
  ``state_dict_img2text`` holds the DDP state dict (``module.`` prefixes).
- SEARLE (miccunifi/SEARLE, ``src/phi.py`` ``Phi``; ``hubconf.py``) and LinCIR
  (navervision/lincir, ``models.py`` ``Phi``, a copy of SEARLE's): ``layers`` = Linear(d, h),
  GELU, Dropout(0.5), Linear(h, h), GELU, Dropout(0.5), Linear(h, o) with ``h = 4d``:
  ``w = W_6 GELU(W_3 GELU(W_0 f + b_0) + b_3) + b_6``. Checkpoint: a dict whose ``Phi`` entry is
  the state dict (``layers.0.weight`` ... ``layers.6.bias``).

Default prompts: Pic2Word ``"a photo of * , {caption}"`` (its CIRR/CIRCO template,
``src/data.py``); SEARLE and LinCIR ``"a photo of $ that {caption}"`` (``validate.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condsim.errors import ModelError
from condsim.io import file_digest
from condsim.models.base import PixelEncoder
from condsim.registry import register_model
from condsim.types import ModelMeta

CAPTION_FIELD = "{caption}"
PROMPT_OPTION = "?prompt="
#: compose inputs of every textual-inversion adapter: the CLIP's un-normalised image features
#: (shared by all methods over the same CLIP: they depend on the CLIP only)
IMAGE_FEATURES_TAG = "clip-image-features-unnormalised"


class SearlePhi(nn.Module):
    """SEARLE's / LinCIR's ``Phi``: ``layers`` = Linear(d, h), GELU, Dropout(p),
    Linear(h, h), GELU, Dropout(p), Linear(h, o); ``phi(f) = W_6 GELU(W_3 GELU(W_0 f + b_0) +
    b_3) + b_6`` (dropout is the identity in eval mode)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Pic2WordIM2TEXT(nn.Module):
    """Pic2Word's ``IM2TEXT``: ``n_layer`` blocks ``layers.{i}`` = Linear, Dropout(p), ReLU,
    then ``fc_out``; ``phi(f) = W_o ReLU(... ReLU(W_1 f + b_1) ...) + b_o``."""

    def __init__(self, embed_dim: int, middle_dim: int, output_dim: int, n_layer: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.fc_out = nn.Linear(middle_dim, output_dim)
        blocks = []
        dim = embed_dim
        for _ in range(n_layer):
            blocks.append(nn.Sequential(nn.Linear(dim, middle_dim), nn.Dropout(dropout),
                                        nn.ReLU()))
            dim = middle_dim
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc_out(x)


@dataclass(frozen=True)
class Method:
    """What differs between the three methods."""

    name: str
    placeholder: str
    prompt: str
    replace_all: bool  # every placeholder occurrence (LinCIR) or the first (Pic2Word, SEARLE)
    checkpoint_key: str  # the entry of the saved dict holding the state dict
    source: str  # where the published code / weights are
    build: Callable[[str, dict[str, torch.Tensor], int, int], nn.Module]


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def _expect_keys(what: str, sd: dict[str, torch.Tensor], expected: list[str]) -> None:
    missing = [k for k in expected if k not in sd]
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise ModelError(
            f"{what}: " + (f"missing {missing[:4]}" if missing else "")
            + ("; " if missing and extra else "") + (f"unexpected {extra[:4]}" if extra else "")
            + f" (it holds {sorted(sd)[:6]}); not a checkpoint of this method's mapping network")


def _check_dims(what: str, sd: dict[str, torch.Tensor], first: str, last: str, in_dim: int,
                out_dim: int) -> None:
    w0, wl = sd[first], sd[last]
    if w0.ndim != 2 or int(w0.shape[1]) != in_dim:
        raise ModelError(f"{what}: {first} has shape {_shape(w0)}, the CLIP image width is "
                         f"{in_dim}; use the checkpoint trained for this CLIP")
    if wl.ndim != 2 or int(wl.shape[0]) != out_dim:
        raise ModelError(f"{what}: {last} has shape {_shape(wl)}, the CLIP text token width "
                         f"is {out_dim}; use the checkpoint trained for this CLIP")


def _build_phi(what: str, sd: dict[str, torch.Tensor], in_dim: int, out_dim: int) -> nn.Module:
    if any(k.startswith(("fc_out.", "module.")) or k.count(".") == 3 for k in sd):
        raise ModelError(f"{what}: holds {sorted(sd)[:4]}, the layout of Pic2Word's IM2TEXT, "
                         "not of SEARLE's/LinCIR's Phi; load it as pic2word:")
    _expect_keys(what, sd, [f"layers.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")])
    _check_dims(what, sd, "layers.0.weight", "layers.6.weight", in_dim, out_dim)
    hidden = int(sd["layers.0.weight"].shape[0])
    if tuple(sd["layers.3.weight"].shape) != (hidden, hidden):
        raise ModelError(f"{what}: layers.3.weight has shape {_shape(sd['layers.3.weight'])}, "
                         f"expected ({hidden}, {hidden}) after layers.0.weight "
                         f"{_shape(sd['layers.0.weight'])}")
    return SearlePhi(in_dim, hidden, out_dim, dropout=0.5)


def _build_im2text(what: str, sd: dict[str, torch.Tensor], in_dim: int, out_dim: int
                   ) -> nn.Module:
    if "layers.6.weight" in sd or ("layers.0.weight" in sd and "fc_out.weight" not in sd):
        raise ModelError(f"{what}: holds {sorted(sd)[:4]}, the layout of SEARLE's/LinCIR's "
                         "Phi, not of Pic2Word's IM2TEXT; load it as searle: or lincir:")
    n_layer = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    if n_layer == 0:
        raise ModelError(f"{what}: no layers.<i>.0.weight (it holds {sorted(sd)[:6]}); not a "
                         "Pic2Word IM2TEXT state dict")
    _expect_keys(what, sd, [f"layers.{i}.0.{p}" for i in range(n_layer)
                            for p in ("weight", "bias")] + ["fc_out.weight", "fc_out.bias"])
    _check_dims(what, sd, "layers.0.0.weight", "fc_out.weight", in_dim, out_dim)
    middle = int(sd["layers.0.0.weight"].shape[0])
    return Pic2WordIM2TEXT(in_dim, middle, out_dim, n_layer=n_layer, dropout=0.1)


METHODS: dict[str, Method] = {
    "pic2word": Method(
        "pic2word", "*", "a photo of * , " + CAPTION_FIELD, False, "state_dict_img2text",
        "google-research/composed_image_retrieval (IM2TEXT, model/model.py; weights: "
        "pic2word_model.pt from its README)", _build_im2text),
    "searle": Method(
        "searle", "$", "a photo of $ that " + CAPTION_FIELD, False, "Phi",
        "miccunifi/SEARLE (Phi, src/phi.py; weights: the SEARLE_ViT-B32.pt / SEARLE_ViT-L14.pt "
        "release assets hubconf.py downloads)", _build_phi),
    "lincir": Method(
        "lincir", "$", "a photo of $ that " + CAPTION_FIELD, True, "Phi",
        "navervision/lincir (Phi, models.py; weights: lincir_large.pt on the HF hub "
        "navervision/zeroshot-cir-models, or train_phi.py output)", _build_phi),
}


def split_name(method: str, rest: str) -> tuple[Path, str, str | None]:
    """``<ckpt>/<clip>[?prompt=<template>]`` or ``<ckpt>::<clip>[...]`` -> (checkpoint file,
    CLIP model name, prompt or ``None``). The checkpoint is the first ``/``-prefix that is an
    existing file."""
    spec, sep, prompt = rest.partition(PROMPT_OPTION)
    usage = (f"expected {method}:<checkpoint file>/<CLIP model> (e.g. {method}:/w/ckpt.pt/"
             f"hf:openai/clip-vit-base-patch32) or {method}:<checkpoint>::<CLIP model>")
    if "::" in spec:
        ckpt, clip = spec.split("::", 1)
        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise ModelError(f"{method}:{rest}: checkpoint file {ckpt!r} not found; {usage}")
    else:
        found = None
        for i, ch in enumerate(spec):
            if ch == "/" and i and Path(spec[:i]).expanduser().is_file():
                found = i
                break
        if found is None:
            raise ModelError(f"{method}:{rest}: no '/'-prefix of it is an existing checkpoint "
                             f"file; {usage}")
        path, clip = Path(spec[:found]).expanduser(), spec[found + 1:]
    if not clip:
        raise ModelError(f"{method}:{rest}: no CLIP model after the checkpoint; {usage}")
    return path, clip, (prompt if sep else None)


def load_state(method: Method, path: Path) -> dict[str, torch.Tensor]:
    """The mapping network's state dict from a checkpoint saved the method's way."""
    what = f"{method.name} checkpoint {path}"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (pickle / zip errors of many types)
        raise ModelError(f"{what}: cannot be read by torch.load ({type(exc).__name__}: {exc})"
                         ) from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{what}: holds a {type(obj).__name__}, expected the dict "
                         f"{method.name} saves (state dict under {method.checkpoint_key!r})")
    other = next((m for m in METHODS.values()
                  if m.checkpoint_key != method.checkpoint_key and m.checkpoint_key in obj), None)
    if other is not None and method.checkpoint_key not in obj:
        raise ModelError(f"{what}: holds {other.checkpoint_key!r}, the layout of a "
                         f"{other.name} checkpoint; load it as {other.name}:")
    sd = obj.get(method.checkpoint_key, obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{what}: {method.checkpoint_key!r} is not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return {str(k): v for k, v in sd.items()}


class TextualInversionEncoder(PixelEncoder):
    """A textual-inversion composed-retrieval model (module docstring): queries
    ``normalize(g_txt(P(c); phi(f_img(x))))``, targets ``normalize(f_img(y))``."""

    composes_from_targets = True
    compose_input_tag = IMAGE_FEATURES_TAG

    def __init__(self, method: str, checkpoint: str | Path, clip: Any, *,
                 prompt: str | None = None, name: str | None = None) -> None:
        from condsim.models.clip_hf import DualEncoder

        if method not in METHODS:
            raise ModelError(f"unknown textual-inversion method {method!r}; known: "
                             f"{', '.join(METHODS)}")
        self.method = METHODS[method]
        if not isinstance(clip, DualEncoder) or not hasattr(clip, "image_features"):
            raise ModelError(f"{method}: the CLIP must be an hf: or open_clip: CLIP model, "
                             f"got {getattr(clip.meta, 'name', clip)!r}")
        if clip.mode != "image+text":
            raise ModelError(f"{method}: give the plain CLIP ({clip.meta.extra.get('base_name')})"
                             f", not the combination {clip.meta.name}")
        hf = getattr(clip.model, "config", None)
        if hf is not None and getattr(hf, "model_type", "clip") != "clip":
            raise ModelError(f"{method}: {clip.meta.name} is a {hf.model_type} model; "
                             f"{method} maps images into a CLIP text encoder (model type clip)")
        self.clip = clip
        self.device = clip.device
        self.preprocessor = clip.preprocessor
        self.prompt = self.method.prompt if prompt is None else prompt
        self.token_embedding = _token_embedding(clip)
        self.placeholder_id = _placeholder_id(clip, self.method.placeholder)
        self._check_prompt()
        path = Path(checkpoint)
        sd = load_state(self.method, path)
        in_dim = int(clip.meta.embedding_dim)
        out_dim = int(self.token_embedding.weight.shape[1])
        what = f"{method} checkpoint {path}"
        mapper = self.method.build(what, sd, in_dim, out_dim)
        try:
            mapper.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{what}: does not load into the {method} mapping network "
                             f"({exc})") from exc
        self.mapper = mapper.to(self.device).eval()
        digest = file_digest(path)[:16]
        cm = clip.meta
        namespace = hashlib.blake2b(
            "\0".join([method, digest, self.prompt, str(self.method.replace_all)]).encode(),
            digest_size=8).hexdigest()
        default = self.prompt == self.method.prompt
        base = name or f"{method}:{path}/{cm.name}"
        self.meta = ModelMeta(
            name=base if default else f"{base}{PROMPT_OPTION}{self.prompt}",
            embedding_dim=cm.embedding_dim,
            preprocessing_id=f"{self.preprocessor.id}+{method}",
            conditions=("category", "text"),
            revision=f"{cm.revision}+{method}-{digest}",
            extra={"method": method, "checkpoint": str(path), "clip": cm.name,
                   "prompt": self.prompt, "placeholder": self.method.placeholder,
                   "replace": "all" if self.method.replace_all else "first",
                   "mapping_network": type(mapper).__name__},
            precision=clip.precision,
            cache_space=cm.cache_base,
            query_namespace=f"{method}-{namespace}",
        )

    def _check_prompt(self) -> None:
        p = self.prompt
        if CAPTION_FIELD not in p:
            raise ModelError(f"{self.method.name} prompt {p!r} has no {CAPTION_FIELD} field for "
                             "the condition")
        ids = _token_ids(self.clip, [p.replace(CAPTION_FIELD, "x")])[0]
        if self.placeholder_id not in ids:
            raise ModelError(f"{self.method.name} prompt {p!r} has no placeholder token "
                             f"{self.method.placeholder!r} (a word of its own) for the image")

    def prompts(self, conditions: Sequence[str]) -> list[str]:
        """The prompt of each condition (the template's ``{caption}`` replaced)."""
        return [self.prompt.replace(CAPTION_FIELD, c) for c in conditions]

    def encode_compose_input_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(pixels)

    def target_from_compose_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """``t = normalize(f)``."""
        return F.normalize(inputs.float(), dim=-1).cpu()

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.image_features(pixels), dim=-1)

    def encode_query_pixels(self, pixels: torch.Tensor, conditions: Sequence[str]
                            ) -> torch.Tensor:
        return self._compose(self.clip.image_features(pixels), conditions)

    @torch.inference_mode()
    def compose_queries(self, target_emb: torch.Tensor, conditions: Sequence[str]
                        ) -> torch.Tensor:
        """Queries from the cached *un-normalised* image features ``f`` (compose inputs)."""
        with self.autocast():
            return self._compose(target_emb.to(self.device, torch.float32), conditions
                                 ).float().cpu()

    def pseudo_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """``w = phi(f)``: the pseudo-word embeddings ``(B, token width)``."""
        return self.mapper(features)

    def _compose(self, features: torch.Tensor, conditions: Sequence[str]) -> torch.Tensor:
        pseudo = self.pseudo_tokens(features)
        prompts = self.prompts(conditions)
        with inject_pseudo_tokens(self.token_embedding, self.placeholder_id, pseudo,
                                  replace_all=self.method.replace_all, prompts=prompts):
            return self.clip.encode_texts(prompts)


@contextmanager
def inject_pseudo_tokens(embedding: nn.Module, token_id: int, pseudo: torch.Tensor, *,
                         replace_all: bool, prompts: Sequence[str]) -> Iterator[None]:
    """While active, the token-embedding lookup ``E[ids]`` returns ``pseudo[b]`` at row ``b``'s
    placeholder positions (the first, or all with ``replace_all``): the substitution happens
    before the positional embedding is added, and the rest of the text tower runs unchanged."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             out: torch.Tensor) -> torch.Tensor:
        ids = args[0] if args else kwargs["input"]
        if ids.ndim != 2 or ids.shape[0] != pseudo.shape[0]:
            raise ModelError(f"token ids of shape {tuple(ids.shape)} for {pseudo.shape[0]} "
                             "pseudo tokens")
        hit = ids == token_id
        if not replace_all:
            hit &= hit.cumsum(dim=-1) == 1
        lost = (~hit.any(dim=-1)).nonzero().flatten().tolist()
        if lost:
            raise ModelError(f"prompt {prompts[lost[0]]!r} has no placeholder token after "
                             "tokenisation (truncated?)")
        out = out.clone()
        out[hit] = pseudo.to(out.dtype)[hit.nonzero()[:, 0]]
        return out

    handle = embedding.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _token_embedding(clip: Any) -> nn.Module:
    """The CLIP's text token-embedding module (transformers or open_clip)."""
    model = clip.model
    for path in ("text_model.embeddings.token_embedding", "token_embedding",
                 "text.token_embedding"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Embedding):
            return obj
    raise ModelError(f"{clip.meta.name}: cannot find the text token embedding")


def _token_ids(clip: Any, texts: Sequence[str]) -> list[list[int]]:
    tok = clip.tokenizer
    if callable(getattr(tok, "convert_tokens_to_ids", None)):  # transformers
        return [list(x) for x in tok(list(texts))["input_ids"]]
    return [[int(i) for i in row if int(i)] for row in tok(list(texts))]  # open_clip


def _placeholder_id(clip: Any, placeholder: str) -> int:
    """The id of ``placeholder`` as a word of its own (its tokenisation between the start and
    end tokens; Pic2Word: ``tokenize(["*"])[0][1]``; SEARLE's 259 is that of ``$``)."""
    ids = _token_ids(clip, [placeholder])[0][1:-1]
    if len(ids) != 1:
        raise ModelError(f"{clip.meta.name}: the placeholder {placeholder!r} is {len(ids)} "
                         "tokens for this tokenizer, expected one")
    return ids[0]


def _factory(method: str) -> Callable[..., TextualInversionEncoder]:
    def create(rest: str, *, prompt: str | None = None, **kwargs: Any
               ) -> TextualInversionEncoder:
        from condsim.registry import create_model

        ckpt, clip_name, named_prompt = split_name(method, rest)
        if prompt is not None and named_prompt is not None and prompt != named_prompt:
            raise ModelError(f"{method}:{rest}: two prompts (in the name and prompt=)")
        clip = create_model(clip_name, precision="fp32", **kwargs)
        spec = rest.partition(PROMPT_OPTION)[0]
        return TextualInversionEncoder(method, ckpt, clip, name=f"{method}:{spec}",
                                       prompt=named_prompt if prompt is None else prompt)

    create.__name__ = f"create_{method}"
    return create


for _m in METHODS.values():
    register_model(
        f"{_m.name}:", scheme=True,
        description=f"{_m.name}:<ckpt>/<CLIP> textual inversion, prompt "
                    f"{_m.prompt!r} (?prompt= to change)",
    )(_factory(_m.name))
