"""Checkpoint -> one self-contained .onnx file (plus optional encoder/head parts for streaming),
checked against torch before anything is written.

Why the TorchScript exporter (dynamo=False): the dynamo exporter bakes T into the LSTM's reshapes,
while the TorchScript one keeps batch and T symbolic. A dynamic T is kept only when onnxruntime
really matches torch at T-1 and T+2 as well; otherwise the model is re-exported with T fixed.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slstt.card import DTYPES, ExportInfo, ModelCard
from slstt.errors import SlsttError
from slstt.export.metadata import set_metadata

MAX_IR_VERSION = 13  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 may write 14
MAX_BYTES = 2**31 - 1  # protobuf's hard limit for one file
FP32_TOLERANCE = 1e-4  # max |logit difference| torch vs onnxruntime; features: relative to their scale
PARITY_SEED = 0

# name -> (input name, output name, dynamic axes)
PARTS: dict[str, tuple[str, str]] = {
    "full": ("flows", "logits"),
    "encoder": ("frames", "features"),
    "head": ("features", "logits"),
}


@dataclass
class ParityCheck:
    part: str
    dtype: str
    provider: str
    batch: int
    T: int | None
    max_abs_diff: float
    top1_agreement: float | None  # fraction of samples; None for encoder features
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportReport:
    outputs: list[Path]
    dtype: str
    opset: int
    dynamic_time: bool
    num_frames: int
    input_size: int
    source: str
    size_bytes: dict[str, int] = field(default_factory=dict)
    parity: list[ParityCheck] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class _Encoder(nn.Module):
    """frames (N, 3, H, W) -> per-frame features (N, D) (class token after the final norm)."""

    def __init__(self, model: Any):  # an SLSTT (encode/aggregate), typed loosely: nn.Module hides them
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode(frames.unsqueeze(1))[:, 0]


class _Head(nn.Module):
    """features (B, T, D) -> logits (B, C)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.aggregate(features)


class _Half(nn.Module):
    """Runs a half-precision copy; float32 in and out, so callers never see fp16 tensors."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.half()).float()


# ---- loading / checks -------------------------------------------------------------------------


def _load(checkpoint: Any, aggregator: str = "auto") -> Any:
    """A LoadedCheckpoint from a path (project or authors' file) or an already loaded one.

    aggregator: auto (what the checkpoint says or its tensors imply) | lstm | mean."""
    if hasattr(checkpoint, "model") and hasattr(checkpoint, "model_config"):
        return checkpoint
    import inspect

    from slstt.models.checkpoint import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise SlsttError(f"checkpoint not found: {path}; pass a .pt/.pth.tar written by `slstt train`")
    options: dict[str, Any] = {"map_location": "cpu"}
    if aggregator != "auto":
        if "aggregator" not in inspect.signature(load_checkpoint).parameters:
            raise SlsttError(f"--aggregator {aggregator}: this slstt's checkpoint loader cannot override the "
                             "aggregator yet; use --aggregator auto")
        options["aggregator"] = aggregator
    try:
        return load_checkpoint(path, **options)
    except SlsttError:
        raise
    except Exception as exc:  # any unreadable file: one line, never a traceback
        first = (str(exc).splitlines() or [""])[0][:120]
        raise SlsttError(
            f"{path}: not a readable slstt or authors' checkpoint ({type(exc).__name__}: {first})"
        ) from None


def check_output_path(output: Path) -> None:
    """Fail before the (slow) export when the result could not be written."""
    if output.suffix != ".onnx":
        raise SlsttError(f"output must end in .onnx: {output}")
    if output.is_dir():
        raise SlsttError(f"output {output} is a directory; pass a file name ending in .onnx")
    parent = output.parent
    while not parent.exists():  # atomic_write creates missing folders; check the nearest real one
        parent = parent.parent
    if not parent.is_dir():
        raise SlsttError(f"cannot write {output}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise SlsttError(f"cannot write {output}: folder {parent} is not writable ({exc.strerror})") from None


def part_paths(output: Path) -> dict[str, Path]:
    return {
        "full": output,
        "encoder": output.with_name(output.stem + ".encoder.onnx"),
        "head": output.with_name(output.stem + ".head.onnx"),
    }


@contextmanager
def _quiet():
    """The exporters warn about things that do not apply here (TracerWarning on timm's size assert,
    the LSTM batch-size note, the legacy-exporter deprecation, quantizer pre-processing advice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


# ---- export -----------------------------------------------------------------------------------


def _to_onnx(module: nn.Module, example: torch.Tensor, part: str, opset: int, dynamic_time: bool) -> Any:
    import onnx

    in_name, out_name = PARTS[part]
    axes_in: dict[int, str] = {0: "batch"}
    if part in ("full", "head") and dynamic_time:
        axes_in[1] = "T"
    buffer: Any = io.BytesIO()  # torch's annotation says path, its code takes a file object
    module.eval()  # the exporter restores the wrapper's mode afterwards, recursively: keep it eval
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[in_name], output_names=[out_name], do_constant_folding=True,
            dynamic_axes={in_name: axes_in, out_name: {0: "batch"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto


def _quantize_int8(proto: Any) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(proto, out, weight_type=QuantType.QInt8)
        quantized = onnx.load(str(out))
    quantized.ir_version = min(quantized.ir_version, MAX_IR_VERSION)
    return quantized


def _session(model_bytes: bytes, dtype: str) -> tuple[Any, str]:
    """An onnxruntime session to verify with: CPU; fp16 may fall back to a usable GPU provider."""
    import onnxruntime as ort

    from slstt.export.runtime import create_session_from_bytes, usable_providers

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]), "cpu"
    except Exception as exc:
        if dtype != "fp16":
            raise SlsttError(f"onnxruntime cannot load the exported {dtype} model ({str(exc)[:160]})") from None
        gpu = [p for p in usable_providers() if p != "cpu"]
        if not gpu:
            raise SlsttError(
                "fp16 export cannot be verified here: onnxruntime's CPU provider cannot run it and no "
                "CUDA/TensorRT provider is usable; export fp16 on the GPU machine or use --dtype fp32"
            ) from None
        session, used = create_session_from_bytes(model_bytes, gpu[-1], warmup=False)
        return session, used[0]


def _run(session: Any, x: np.ndarray) -> np.ndarray:
    inp = session.get_inputs()[0]
    if inp.type == "tensor(float16)":
        x = x.astype(np.float16)
    return np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)


def _compare(part: str, dtype: str, provider: str, ref: np.ndarray, got: np.ndarray, T: int | None) -> ParityCheck:
    if ref.shape != got.shape:
        return ParityCheck(part, dtype, provider, ref.shape[0], T, float("inf"), 0.0, False)
    diff = float(np.abs(ref - got).max())
    agreement = None
    if part == "encoder":
        tolerance = FP32_TOLERANCE * max(1.0, float(np.abs(ref).max()))
        ok = diff <= tolerance
    else:
        # a disagreement only counts when torch itself separates the two classes by more than tolerance
        rows = np.arange(ref.shape[0])
        picked = ref[rows, got.argmax(1)]
        agree = (got.argmax(1) == ref.argmax(1)) | (ref.max(1) - picked <= FP32_TOLERANCE)
        agreement = float(agree.mean())
        ok = diff <= FP32_TOLERANCE and agreement == 1.0
    return ParityCheck(part, dtype, provider, ref.shape[0], T, diff, agreement, bool(ok))


def _parity(module: nn.Module, part: str, proto: Any, dtype: str, inputs: list[torch.Tensor],
            T_of: list[int | None]) -> list[ParityCheck]:
    session, provider = _session(proto.SerializeToString(), dtype)
    checks = []
    for x, T in zip(inputs, T_of, strict=True):
        with torch.no_grad():
            ref = module(x).float().numpy()
        try:
            got = _run(session, x.numpy())
        except Exception:  # e.g. a T the graph cannot take: counted as a failed check
            got = np.full((0,), np.nan, dtype=np.float32)
        checks.append(_compare(part, dtype, provider, ref, got, T))
    return checks


def _inputs(part: str, size: int, model: Any, times: list[int]) -> tuple[list, list]:
    g = torch.Generator().manual_seed(PARITY_SEED)
    if part == "encoder":
        return [torch.randn(4, 3, size, size, generator=g)], [None]
    flows = [torch.randn(2, t, 3, size, size, generator=g) for t in times]
    if part == "full":
        return flows, list(times)
    with torch.no_grad():  # realistic features for the head: the encoder's own outputs
        return [model.encode(f) for f in flows], list(times)


def _check_options(dtype: str, opset: int) -> None:
    if dtype not in DTYPES:
        raise SlsttError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not 14 <= opset <= 20:
        raise SlsttError(f"opset {opset} not supported; use 14..20 (default 17)")


@dataclass
class _Plan:
    """What one export works on: the float model, its card, the wrapped parts and their examples."""

    model: nn.Module
    card: ModelCard
    modules: dict[str, nn.Module]
    examples: dict[str, torch.Tensor]

    @property
    def T(self) -> int:
        return self.card.num_frames

    @property
    def size(self) -> int:
        return self.card.input_size


def _plan(loaded: Any) -> _Plan:
    """The model card (T and size owned by it, checked against the checkpoint's model) and the parts."""
    model = loaded.model.float().eval()
    card = loaded.card if hasattr(loaded, "card") else \
        ModelCard.from_training(loaded.model_config, loaded.preprocess_config, loaded.meta)
    T, size = card.num_frames, card.input_size
    dim = model.backbone.embed_dim if hasattr(model, "backbone") else None
    examples = {"full": torch.zeros(1, T, 3, size, size), "encoder": torch.zeros(1, 3, size, size),
                "head": torch.zeros(1, T, dim or 1)}
    if dim is None:
        with torch.no_grad():
            examples["head"] = model.encode(torch.zeros(1, T, 3, size, size))
    modules = {"full": model, "encoder": _Encoder(model).eval(), "head": _Head(model).eval()}
    return _Plan(model, card, modules, examples)


def _fp32_graph(plan: _Plan, part: str, opset: int, dynamic: bool, parity: bool, console: Any
                ) -> tuple[Any, bool, list[ParityCheck], list, list]:
    """(proto, dynamic T kept, fp32 checks, parity inputs, their T): a dynamic T that onnxruntime does
    not honour is re-exported fixed; any fp32 mismatch fails with nothing written."""
    module = plan.modules[part]
    proto = _to_onnx(module, plan.examples[part], part, opset, dynamic)
    if not parity:
        return proto, dynamic, [], [], []
    times = list(dict.fromkeys([plan.T, max(1, plan.T - 1), plan.T + 2] if dynamic else [plan.T]))
    xs, t_of = _inputs(part, plan.size, plan.model, times)
    checks = _parity(module, part, proto, "fp32", xs, t_of)
    if dynamic and not all(c.passed for c in checks[1:]) and checks[0].passed:
        console.print(f"[yellow]dynamic T failed the check for {part}; exporting with T={plan.T} fixed")
        dynamic = False
        proto = _to_onnx(module, plan.examples[part], part, opset, False)
        xs, t_of = xs[:1], t_of[:1]
        checks = _parity(module, part, proto, "fp32", xs, t_of)
    failed = [c for c in checks if not c.passed]
    if failed:
        c = failed[0]
        raise SlsttError(
            f"parity check failed for {part} at T={c.T}: max |diff| {c.max_abs_diff:.3g} "
            f"(limit {FP32_TOLERANCE:g}), top-1 agreement {c.top1_agreement}; nothing written"
        )
    return proto, dynamic, checks, xs, t_of


def _convert_dtype(plan: _Plan, part: str, proto: Any, dtype: str, opset: int, dynamic: bool) -> Any:
    if dtype == "fp16":
        return _to_onnx(_Half(copy.deepcopy(plan.modules[part]).half()), plan.examples[part], part, opset, dynamic)
    if dtype == "int8":
        return _quantize_int8(proto)
    return proto


def _stamp(plan: _Plan, proto: Any, part: str, info: ExportInfo, checks: list[ParityCheck]) -> bytes:
    """The card with this part's export facts, written into the graph; the serialized bytes."""
    card = copy.copy(plan.card)
    card.export = ExportInfo(**{**info.__dict__, "part": part, "checkpoint": dict(info.checkpoint),
                                "parity": {"seed": PARITY_SEED, "tolerance": FP32_TOLERANCE,
                                           "reference": "torch fp32 cpu", "checks": [c.to_dict() for c in checks]}})
    set_metadata(proto, card.to_dict())
    if proto.ByteSize() > MAX_BYTES:
        raise SlsttError(
            f"{part} model is {proto.ByteSize() / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit; "
            "use a smaller backbone or --dtype fp16/int8"
        )
    return proto.SerializeToString()


def _write_all(output: Path, blobs: dict[str, bytes], report: ExportReport) -> None:
    """All parts or none."""
    from slstt.io import atomic_write_bytes

    paths = part_paths(output)
    written: list[Path] = []
    try:
        for part, blob in blobs.items():
            written.append(atomic_write_bytes(paths[part], blob))
            report.size_bytes[part] = len(blob)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    report.outputs = written


def export_onnx(
    checkpoint: Any,
    output: str | Path,
    *,
    split: bool = False,
    dtype: str = "fp32",
    opset: int = 17,
    dynamic_time: bool = True,
    parity: bool = True,
    console: Any = None,
    aggregator: str = "auto",
) -> ExportReport:
    """Export a project or authors' checkpoint (path or LoadedCheckpoint) to ONNX.

    Writes nothing unless every part exported and (with parity) matched torch: fp32 must agree to
    1e-4 on logits with the same top-1, or SlsttError. fp16/int8 differences are reported, not failed.
    Steps: check options and output -> load -> plan (model card, parts) -> per part: fp32 graph and
    parity, dtype conversion, card stamped into the graph -> write all parts or none.
    """
    from rich.console import Console

    console = console or Console()
    started = time.perf_counter()
    _check_options(dtype, opset)
    output = Path(output)
    check_output_path(output)
    loaded = _load(checkpoint, aggregator)
    plan = _plan(loaded)
    report = ExportReport([], dtype, opset, dynamic_time, plan.T, plan.size, str(getattr(loaded, "source", "")))
    info = ExportInfo(dtype=dtype, dynamic_time=dynamic_time, opset=opset, export_id=uuid.uuid4().hex, split=split,
                      checkpoint={**plan.card.export.checkpoint, "name": _name(checkpoint), "source": report.source},
                      exported_at=plan.card.export.exported_at)
    blobs: dict[str, bytes] = {}
    for part in ["full", "encoder", "head"] if split else ["full"]:
        with console.status(f"exporting {part} ({dtype}, opset {opset})"):
            timed = part != "encoder"
            proto, dynamic, checks, xs, t_of = _fp32_graph(plan, part, opset, dynamic_time and timed, parity, console)
            if timed and dynamic_time and not dynamic:
                report.dynamic_time = dynamic_time = info.dynamic_time = False
            proto = _convert_dtype(plan, part, proto, dtype, opset, dynamic)
            if parity and dtype != "fp32":
                checks += _parity(plan.modules[part], part, proto, dtype, xs, t_of)
            report.parity += checks
            info.dynamic_time = dynamic if timed else dynamic_time
            blobs[part] = _stamp(plan, proto, part, info, checks)
            if part == "full":
                report.metadata = json.loads(_metadata_json(proto))
    _print_parity(console, report.parity)
    _write_all(output, blobs, report)
    report.seconds = time.perf_counter() - started
    return report


def _metadata_json(proto: Any) -> str:
    from slstt.export.metadata import METADATA_KEY

    return next(p.value for p in proto.metadata_props if p.key == METADATA_KEY)


CHECKPOINT_SUFFIXES = (".pth.tar", ".pt", ".pth", ".ckpt", ".tar")


def default_output(checkpoint: Path) -> Path:
    """checkpoint stem + .onnx beside it (model_best_x.pth.tar -> model_best_x.onnx)."""
    name = checkpoint.name
    for suffix in CHECKPOINT_SUFFIXES:
        if name.endswith(suffix):
            return checkpoint.with_name(name[: -len(suffix)] + ".onnx")
    return checkpoint.with_name(name + ".onnx")


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None, *, dtype: str = "fp32",
                      split: bool = False, opset: int = 17, dynamic_time: bool = True, parity: bool = True,
                      aggregator: str = "auto", console: Any = None) -> ExportReport:
    """`slstt export onnx` and `slstt.export(...)`: the options checked in one line each, the default
    output name, then export_onnx."""
    from slstt.config import AGGREGATORS

    if dtype not in DTYPES:
        raise SlsttError(f"--dtype {dtype!r} unknown; choose one of {', '.join(DTYPES)}")
    if aggregator not in ("auto", *AGGREGATORS):
        raise SlsttError(f"--aggregator {aggregator!r} unknown; choose auto, {', '.join(AGGREGATORS)}")
    checkpoint = Path(checkpoint)
    out = Path(output) if output is not None else default_output(checkpoint)
    return export_onnx(checkpoint, out, split=split, dtype=dtype, opset=opset, dynamic_time=dynamic_time,
                       parity=parity, console=console, aggregator=aggregator)


def _name(checkpoint: Any) -> str:
    return Path(checkpoint).name if isinstance(checkpoint, (str, Path)) else ""


def _print_parity(console: Any, checks: list[ParityCheck]) -> None:
    if not checks:
        console.print("[yellow]parity check skipped (--no-parity)")
        return
    from rich.table import Table

    table = Table(title="parity: torch fp32 vs onnxruntime (random input, seed 0)")
    for col in ("part", "dtype", "provider", "batch", "T", "max |diff|", "top-1 agreement", "ok"):
        table.add_column(col)
    for c in checks:
        ok = "yes" if c.passed else ("[red]no" if c.dtype == "fp32" else "[yellow]report")
        agree = "-" if c.top1_agreement is None else f"{c.top1_agreement:.0%}"
        table.add_row(c.part, c.dtype, c.provider, str(c.batch), str(c.T or "-"),
                      f"{c.max_abs_diff:.2e}", agree, ok)
    console.print(table)
