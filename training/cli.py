"""`slstt train`: load a data set, prepare missing samples, train LOSO (or all), report.
Only typer/stdlib at import time; the heavy stack is imported inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slstt.data.cli import (
    ANNOTATIONS_OPTION,
    APEX_POLICY_OPTION,
    CACHE_DIR_OPTION,
    CROP_OPTION,
    DATA_ROOT_OPTION,
    DATASET_OPTION,
    ENCODING_OPTION,
    FACE_MODEL_OPTION,
    FLOW_OPTION,
    FLOW_SIZE_OPTION,
    FPS_OPTION,
    FRAMES_OPTION,
    INPUT_SIZE_OPTION,
    SCHEME_OPTION,
    build_preprocess_config,
    check_input_file,
    check_output_dir,
)


def train_command(
    dataset: str = DATASET_OPTION,
    data_root: Path = DATA_ROOT_OPTION,
    annotations: Optional[Path] = ANNOTATIONS_OPTION,  # noqa: UP045 (typer needs Optional on py3.10)
    scheme: Optional[str] = SCHEME_OPTION,  # noqa: UP045
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run directory (re-run the same command to resume)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run with a different config in --out."),
    protocol: str = typer.Option("loso", "--protocol", help="loso: one fold per subject | all: one model on every subject."),
    fold: list[str] = typer.Option([], "--fold", help="Only these test subjects (repeatable)."),
    select: str = typer.Option("last", "--select", help="Epoch: last (fixed count) | val (held-out training subjects) | test (paper's, OPTIMISTIC)."),
    val_subjects: int = typer.Option(2, "--val-subjects", help="Training subjects held out per fold with --select val."),
    backbone: str = typer.Option("vit_base_patch16_384", "--backbone", help="timm ViT name."),
    aggregator: str = typer.Option("lstm", "--aggregator", help="lstm | mean"),
    lstm_hidden: int = typer.Option(512, "--lstm-hidden", help="LSTM hidden size (paper 512)."),
    lstm_layers: int = typer.Option(3, "--lstm-layers", help="LSTM layers (paper 3)."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="timm's ImageNet weights for the backbone."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local backbone weights file (timm or B_16_imagenet1k.pth)."),  # noqa: UP045
    finetune_blocks: int = typer.Option(0, "--finetune-blocks", help="Also train the last k transformer blocks (disables the feature cache)."),
    epochs: int = typer.Option(40, "--epochs"),
    lr: float = typer.Option(0.01, "--lr"),
    lr_step_epoch: int = typer.Option(30, "--lr-step-epoch", help="lr x0.1 after this many epochs."),
    batch_size: int = typer.Option(2, "--batch-size"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (the paper's: momentum 0.9, wd 1e-4) | adamw (use with --lr 0.001 for the LSTM)."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient's global norm to this (0: off; default 1 with adamw, off with sgd)."),  # noqa: UP045
    warmup_epochs: int = typer.Option(0, "--warmup-epochs", help="Linear lr warm-up over this many epochs (0: off)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    feature_cache: bool = typer.Option(True, "--feature-cache/--no-feature-cache", help="Frozen backbone: compute class tokens once."),
    feature_dropout: float = typer.Option(0.0, "--feature-dropout", help="Dropout on cached tokens while training."),
    cache_dir: Path = CACHE_DIR_OPTION,
    workers: int = typer.Option(2, "--workers", help="Processes preparing missing samples (0: in this process)."),
    face_model: Optional[Path] = FACE_MODEL_OPTION,  # noqa: UP045
    crop: str = CROP_OPTION,
    flow: str = FLOW_OPTION,
    encoding: str = ENCODING_OPTION,
    frames: int = FRAMES_OPTION,
    input_size: int = INPUT_SIZE_OPTION,
    fps: Optional[float] = FPS_OPTION,  # noqa: UP045
    apex_policy: str = APEX_POLICY_OPTION,
    flow_size: Optional[int] = FLOW_SIZE_OPTION,  # noqa: UP045
    executor: str = typer.Option("local", "--executor", help="local (one fold at a time) | ray (folds as Ray tasks)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray: none = private local instance | auto | ray://host:10001"),  # noqa: UP045
    gpus_per_fold: float = typer.Option(0.0, "--gpus-per-fold", help="Ray: GPUs per fold (0.5 = two folds per GPU)."),
    cpus_per_fold: float = typer.Option(1.0, "--cpus-per-fold", help="Ray: CPUs per fold."),
    max_retries: int = typer.Option(2, "--max-retries", help="Ray: retries of a fold whose worker died."),
    shared_dir: Optional[Path] = typer.Option(None, "--shared-dir", help="Ray: folder every node sees, for shared inputs."),  # noqa: UP045
) -> None:
    """Train SLSTT under leave-one-subject-out (or on all subjects)."""
    from slstt.config import ModelConfig
    from slstt.training.config import TrainConfig
    from slstt.training.executors import get_executor
    from slstt.training.loso import resolve_device

    # Everything checkable without the data fails here, in one line, before the slow prepare step.
    resolve_device(device)
    check_output_dir(out, "--out")
    check_output_dir(cache_dir, "--cache-dir")
    check_backbone(backbone)
    check_input_file(weights, "--weights", "backbone weights file (timm .pth/.safetensors or B_16_imagenet1k.pth)")
    check_input_file(face_model, "--face-model", "MediaPipe face_landmarker.task (or leave it out)")
    prep = build_preprocess_config(crop, flow, encoding, frames, input_size, fps, apex_policy, flow_size)
    model = ModelConfig(backbone=backbone, input_size=input_size, num_frames=frames, aggregator=aggregator,
                        lstm_hidden=lstm_hidden, lstm_layers=lstm_layers, finetune_blocks=finetune_blocks)
    cfg = TrainConfig(
        dataset=dataset.lower(), data_root=str(data_root.resolve()),
        annotations=str(annotations.resolve()) if annotations else None, scheme=scheme,
        cache_dir=str(cache_dir), face_model=str(face_model) if face_model else None,
        preprocess=prep.to_dict(), model=model.to_dict(), pretrained=pretrained,
        weights=str(weights.resolve()) if weights else None, protocol=protocol, folds=list(fold),
        epochs=epochs, lr=lr, lr_step_epoch=lr_step_epoch, batch_size=batch_size, optimizer=optimizer.lower(),
        grad_clip=grad_clip, warmup_epochs=warmup_epochs, seed=seed, device=device,
        select=select, val_subjects=val_subjects, feature_cache=feature_cache,
        feature_dropout=feature_dropout, workers=workers, out_dir=str(out),
    )
    # Built before any data is read, so a missing Ray fails at once with its install line.
    ray_options = dict(address=ray_address, gpus_per_fold=gpus_per_fold, cpus_per_fold=cpus_per_fold,
                       max_retries=max_retries, shared_dir=shared_dir)
    ex = get_executor(executor, **(ray_options if executor == "ray" else {}))
    try:
        if pretrained and weights is None:  # offline: one line in seconds, not after preparing the data
            from slstt.models.factory import ensure_pretrained_available

            ensure_pretrained_available(backbone)
        run_training(cfg, overwrite=overwrite, executor=ex)
    finally:
        getattr(ex, "close", lambda: None)()  # stops a local Ray instance the executor started


def check_backbone(name: str) -> None:
    """SlsttError (one line, with close names) unless timm knows `name` as a ViT."""
    import difflib

    import timm

    from slstt.errors import SlsttError

    base = name.split(".")[0]
    if timm.is_model(base) and base.startswith(("vit_", "deit_")):
        return
    close = difflib.get_close_matches(base, timm.list_models(["vit_*", "deit_*"]), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. vit_base_patch16_384 or vit_tiny_patch16_224"
    raise SlsttError(f"--backbone {name!r} is not a timm ViT; {hint}")


def run_training(cfg, overwrite: bool = False, executor=None) -> dict:
    """Load + prepare the data, train every fold with live progress, print the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from slstt.training.loso import train_run

    console = Console(stderr=True)
    samples, cfg = load_training_samples(cfg, console)
    if cfg.optimistic:
        console.print("[bold red]OPTIMISTIC run:[/] --select test picks each fold's epoch on its test subject "
                      "(the paper's protocol); scores are inflated and labelled as such.")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as bar:
        from slstt.training.loso import plan_folds

        folds = plan_folds(cfg, sorted({s.subject for s in samples}))
        fold_task = bar.add_task("folds", total=len(folds), info="")
        epoch_task = bar.add_task("epochs", total=cfg.epochs, info="")
        feature_task = None

        def on_feature(n: int) -> None:
            nonlocal feature_task
            if feature_task is None:
                feature_task = bar.add_task("features (frozen backbone, once)", total=len(samples), info="")
            bar.advance(feature_task, n)

        def on_progress(fold: str, epoch: int, total: int, row: dict) -> None:
            info = f"fold {fold}  loss {row['train_loss']:.3f}  acc {row['train_acc']:.2f}"
            bar.update(epoch_task, completed=epoch, total=total, info=info)

        def on_fold(fold: str, status: str) -> None:
            bar.advance(fold_task)
            if status != "done":
                console.print(f"fold {fold}: {status}")
            bar.update(epoch_task, completed=0)

        results = train_run(cfg, samples, overwrite=overwrite, executor=executor, progress=on_progress,
                            on_feature=on_feature, on_fold=on_fold,
                            on_warning=lambda msg: console.print(f"[yellow]warning: {msg}[/]"))
    print_summary(results, cfg)
    return results


def load_training_samples(cfg, console):
    """Samples with prepared flow images (prepare runs for the missing ones); cfg gets the labels."""
    from slstt.data.cli import load_table
    from slstt.data.prepare import prepare_samples
    from slstt.errors import SlsttError
    from slstt.training.loso import check_classes, plan_folds

    root = Path(cfg.data_root)
    if not root.exists():
        raise SlsttError(f"--data-root {root} does not exist; point it at the {cfg.dataset} data set folder")
    table = load_table(cfg.dataset, root, cfg.annotations, cfg.scheme)
    for kind, count in table.problem_counts().items():
        console.print(f"[yellow]warning: {count} sample(s) skipped: {kind} (see `slstt data check`)[/]")
    labels = list(table.scheme.labels)
    check_classes(table.samples, labels, cfg.dataset, table.scheme.name)  # before the slow part
    plan_folds(cfg, table.subjects)  # an absent --fold subject fails here, before preparing
    prep = cfg.preprocess_config()
    report = prepare_samples(table.samples, prep, cfg.cache_dir, workers=cfg.workers, face_model=cfg.face_model)
    failed = {key for key, _ in report.failed}
    samples = [s for s in table.samples if s.key not in failed]
    if failed:
        console.print(f"[yellow]{len(failed)} sample(s) could not be prepared "
                      f"(see {report.cache_dir / 'failures.json'}); training without them[/]")
    if not samples:
        raise SlsttError(f"no sample of {cfg.dataset} could be prepared; see {report.cache_dir / 'failures.json'}")
    check_classes(samples, labels, cfg.dataset, table.scheme.name)
    model = cfg.model_config().replace(num_classes=len(labels), labels=labels, class_scheme=table.scheme.name)
    return samples, cfg.replace(model=model.to_dict(), scheme=table.scheme.name)


def print_summary(results: dict, cfg) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    pooled = results.get("pooled")
    title = f"{cfg.dataset} {cfg.protocol}, select={cfg.select}"
    if cfg.optimistic:
        title = "OPTIMISTIC (test-subject selection) " + title
    table = Table(title=title)
    for column in ("", "n", "accuracy", "UF1", "UAR"):
        table.add_column(column, justify="right")
    if pooled:
        table.add_row("pooled", str(pooled["n"]), f"{pooled['accuracy']:.3f}", f"{pooled['uf1']:.3f}",
                      f"{pooled['uar']:.3f}", style="bold")
        if len(results["per_dataset"]) > 1:
            for row in results["per_dataset"]:
                table.add_row(row["group"], str(row["n"]), f"{row['accuracy']:.3f}", f"{row['uf1']:.3f}",
                              f"{row['uar']:.3f}")
    else:
        table.add_row("all", "-", "-", "-", "-")
    console.print(table)
    if pooled:
        console.print(f"run: {cfg.out_dir}  (results.json, per_subject.csv, confusion_matrix.png, curves.png)")
    else:
        console.print(f"run: {cfg.out_dir}  (model trained on every subject: fold_all/checkpoint.pt)")
