"""The `gammaface` command line. User errors print one sentence and exit with status 2."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence, cast, get_args

from gammaface.common.errors import EXIT_USER_ERROR, Stopped, UserError, explain
from gammaface.common.yamlio import YAMLError
from gammaface.common.yamlio import load as load_yaml
from gammaface.common.yamlio import why as yaml_why


def _parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r} is not of the form key.path=value.")
        try:
            out[key] = load_yaml(value)
        except YAMLError as exc:
            why = yaml_why(exc) or " (quote a string that holds ':', '{' or '[')"
            raise UserError(f"--set {key}: the value {value!r} is not valid YAML{why}.") from None
    return out


def _load_config(args: argparse.Namespace):
    from gammaface import config
    from gammaface.stages import check_placement

    overrides = _parse_sets(getattr(args, "set", None))
    # a cluster job gets its workdir from its runtime environment (k8s/jobs/)
    workdir = getattr(args, "workdir", None) or os.environ.get("GAMMAFACE_WORKDIR")
    if workdir:
        overrides["workdir"] = workdir
    cfg = config.load(args.config, overrides)
    check_placement(cfg, args.config)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from gammaface.commands import pipeline

    cfg = _load_config(args)
    names = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    results = pipeline.run(cfg, names, start_from=args.start_from)
    ran = [r.stage for r in results if not r.skipped]
    print(f"finished: {len(ran)} stage(s) ran, {len(results) - len(ran)} skipped; "
          f"artifacts under {cfg.workdir}")
    report = [r for r in results if r.stage == "report"]
    if report and report[0].skipped:  # a finished run still ends with its table
        from gammaface.run import layout
        from gammaface.downstream.compare import TABLE_FILE
        from gammaface.stages import folder as stage_folder
        from gammaface.storage.store import Store

        folder = Store(cfg.workdir).sub(stage_folder("report", cfg))
        if folder.exists(TABLE_FILE):
            print(folder.read_bytes(TABLE_FILE).decode(), end="")
            print(f"report: {folder.uri(layout.REPORT)}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from gammaface.config import dump_yaml

    cfg = _load_config(args)
    print(dump_yaml(cfg), end="")
    for note in cfg.notes:  # YAML comments, so the printout still loads as a config
        print(f"# note: {note}")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from gammaface.commands import pipeline
    from gammaface.config import Config

    cfg = Config()  # the default config; what a stage needs can depend on settings
    for s in pipeline.STAGES:
        needs = ", ".join(s.needs(cfg)) or "-"
        print(f"{s.name:<18} needs {needs:<32} in {s.folder_in(cfg)}/")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated whole numbers, got {text!r}.") from None


def cmd_gmm_sweep(args: argparse.Namespace) -> int:
    from gammaface.commands import pipeline
    from gammaface.report import tables
    from gammaface.commands.sweep import sweep
    from gammaface.config import LatentSource

    cfg = _load_config(args)
    sources: list[LatentSource] = []
    for s in (s.strip() for s in args.source.split(",") if s.strip()):
        if s not in get_args(LatentSource):
            raise UserError(f"--source takes forward and/or reverse, got {s!r}.")
        sources.append(cast(LatentSource, s))
    from gammaface.storage import lock as workdir_lock
    from gammaface.storage.store import Store

    from gammaface.run import tracking

    workdir = Store(cfg.workdir)
    with workdir_lock.hold(workdir, "gammaface gmm sweep"), \
            tracking.pipeline_run(cfg, workdir, ["harvest", "gmm_search"], kind="sweep"):
        # one MLflow run for the sweep, a nested run per setting with its K, BIC gain and NMI
        table = sweep(cfg, _int_list(args.t_star, "--t-star"), _int_list(args.pca, "--pca"),
                      sources, hash_of=lambda name: pipeline.stage_hash(name, cfg))
    print(tables.markdown(table), end="")
    print(f"written to {Path(cfg.workdir) / 'sweep'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from gammaface.run import tracking
    from gammaface.downstream import compare
    from gammaface.run.layout import COMPARE_DIR, MLFLOW_DB
    from gammaface.storage.store import Store, mirror_of

    uri, experiment, out, root = args.tracking_uri, args.experiment, args.out, None
    if args.config:
        cfg = _load_config(args)
        workdir = Store(cfg.workdir)
        uri = uri or tracking.tracking_uri(cfg, workdir)
        if uri == tracking.default_uri(workdir) and not os.path.isfile(workdir.path(MLFLOW_DB)):
            # opening the default store would create an empty one (and its folder) there
            raise UserError(f"workdir {workdir.root} holds no MLflow store ({MLFLOW_DB}); run the "
                            "config first, or name the store with --tracking-uri.")
        experiment = experiment or cfg.mlflow.experiment
        root = workdir.root  # its own runs only: workdirs that share a store share experiments
        # not report/: that is a stage's, with its record; a remote workdir's goes to its mirror
        out = out or (workdir if workdir.is_local else mirror_of(workdir)).path(COMPARE_DIR)
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError("compare needs a config, --tracking-uri or MLFLOW_TRACKING_URI to find "
                        "the MLflow store.")
    df = tracking.downstream_runs(experiment, args.run, uri, workdir=root)
    summary = compare.summarise(df)
    key, _ = compare.protected_columns(df)
    table = compare.markdown(summary, df["target"].iloc[0], key)
    print(table, end="")
    print("\n" + "\n".join(compare.verdict(df, summary)))
    target = Store(out or COMPARE_DIR)
    compare.write(summary, df["target"].iloc[0], key, target)
    print(f"written to {target.uri(compare.TABLE_FILE)}, {compare.CSV_FILE} and {compare.PLOT_FILE}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gammaface.commands import export, pipeline

    cfg = _load_config(args)
    hashes = {n: pipeline.stage_hash(n, cfg) for n in ("generate", "pseudo_label", "audit")}
    out = export.export(cfg, args.method, args.out, hashes)
    print(f"exported {args.method} to {out} (load it with datasets.load_dataset(\"imagefolder\", "
          f"data_dir=\"{out}\"); the card is {out / export.CARD})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from gammaface.commands import submit

    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UserError("submit needs --address (the Ray dashboard, e.g. http://HEAD:8265) or "
                        "RAY_ADDRESS.")
    address = submit.job_server(address)
    if args.status:
        print(submit.status(address, args.status))
        return 0
    if args.stop:
        stopped = submit.stop(address, args.stop)
        print(f"{args.stop}: {'stop requested' if stopped else 'already finished'}")
        return 0
    if not args.config:
        raise UserError("submit needs a CONFIG to run (or --status ID / --stop ID).")
    if not args.installed:
        from gammaface import config as config_mod

        submit.check_config_path(args.config, args.working_dir)
        config_mod.load(Path(args.working_dir) / args.config, _parse_sets(args.set))  # fail here, not there
    job_id = submit.submit(address, args.config, stages=args.stages, workdir=args.workdir,
                           sets=args.set or [], tracking_uri=args.tracking_uri,
                           working_dir=None if args.installed else args.working_dir)
    print(f"submitted {job_id} to {address}", flush=True)
    if args.no_wait:
        return 0
    final = submit.follow(address, job_id, echo=lambda s: print(s, flush=True))
    print(f"job {job_id} {final}")
    return 0 if final == "SUCCEEDED" else 1


def _out_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_data_synthfaces(args: argparse.Namespace) -> int:
    from gammaface.config import RayConfig, SplitFractions
    from gammaface.data import manifest, synthfaces
    from gammaface.data.synthfaces_spec import DEFAULT_SPEC, Spec
    from gammaface.distributed.runtime import connect

    if args.n <= 0:
        raise UserError(f"--n must be positive, got {args.n}.")
    if not 16 <= args.size <= 128:
        raise UserError(f"--size must lie between 16 and 128 pixels, got {args.size}.")
    try:
        fractions = SplitFractions(train=args.train, val=args.val, test=1 - args.train - args.val)
    except ValueError:
        raise UserError(f"--train {args.train} and --val {args.val} must be fractions that add "
                        "up to at most 1.") from None
    spec = Spec.from_yaml(args.spec) if args.spec else Spec(DEFAULT_SPEC)
    out = _out_dir(args.out)
    if not args.no_ray:
        connect(RayConfig())
    df = synthfaces.build(out, n=args.n, size=args.size, seed=args.seed, spec=spec,
                          train=fractions.train, val=fractions.val,
                          balanced_test=args.balanced_test, use_ray=not args.no_ray, progress=True)
    print(f"wrote {out / manifest.MANIFEST_FILE}")
    print(manifest.summary(df))
    return 0


def cmd_data_ffhq(args: argparse.Namespace) -> int:
    from gammaface.data import ffhq, manifest

    df = ffhq.prepare(Path(args.images), Path(args.features), _out_dir(args.out),
                      variant=args.variant, decode=not args.no_decode_check)
    print(f"wrote {Path(args.out) / manifest.MANIFEST_FILE}")
    print(manifest.summary(df))
    return 0


def cmd_data_fairface(args: argparse.Namespace) -> int:
    from gammaface.data import fairface, manifest

    df = fairface.prepare(Path(args.labels), Path(args.images), _out_dir(args.out),
                          decode=not args.no_decode_check)
    print(f"wrote {Path(args.out) / manifest.MANIFEST_FILE}")
    print(manifest.summary(df))
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment config (YAML), e.g. jobs/demo.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set harvest.t_star=300 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gammaface",
        description="GMM-amended diffusion sampling for fairer face datasets, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the pipeline stages in order, skipping completed ones",
                       description="Run the pipeline stages in order. A stage whose stage.json "
                       "matches the current config is skipped; an incomplete one is redone.")
    _add_config_args(p)
    p.add_argument("--stages", help="comma-separated subset, e.g. prepare,train_ddpm")
    p.add_argument("--workdir", help="where artifacts go (overrides the config's workdir)")
    p.add_argument("--from", dest="start_from", metavar="WORKDIR",
                   help="first copy in the stages that another workdir completed for this same "
                        "config (e.g. the upstream stages of an ablation)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stages", help="list the pipeline stages and what each needs",
                       description="List the pipeline stages in order.")
    p.set_defaults(func=cmd_stages)

    cfg = sub.add_parser("config", help="inspect configs", description="Inspect configs.")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = csub.add_parser("show", help="print the resolved config with every default filled in",
                        description="Validate a config and print it with every default filled in.")
    _add_config_args(p)
    p.add_argument("--workdir", help="override the config's workdir")
    p.set_defaults(func=cmd_config_show)

    p = sub.add_parser("compare", help="the methods x ratios table, read back from MLflow",
                       description="Read the downstream runs back from MLflow and print B, BA, "
                       "Acc., BPC and KL per method and ratio (mean +/- std over seeds); write "
                       "them as Markdown, CSV and a plot. Without --run: the experiment's most "
                       "recent pipeline run that trained downstream classifiers.")
    p.add_argument("config", nargs="?", help="experiment config: its MLflow store, experiment "
                   "and workdir (the output goes to <workdir>/compare)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--workdir", help="override the config's workdir")
    p.add_argument("--experiment", help="MLflow experiment name")
    p.add_argument("--run", help="a pipeline (or downstream stage) run id")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's, else "
                   "MLFLOW_TRACKING_URI)")
    p.add_argument("--out", help="output folder (default: <workdir>/compare, else ./compare)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="write a generated set as a Hugging Face imagefolder with a "
                       "dataset card", description="Write one generated set (images, "
                       "metadata.jsonl with labels, confidences, component and seed) as a "
                       "Hugging Face imagefolder, with a README.md dataset card: how it was made, "
                       "counts per cell, judge-measured balance, novelty and the source's licence.")
    p.add_argument("config", help="the experiment config whose run made the set")
    p.add_argument("--method", required=True, help="the generated set (one of generate.methods)")
    p.add_argument("--out", required=True, help="a new folder to write the dataset into")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--workdir", help="override the config's workdir")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("submit", help="run a config as a Ray job on a cluster",
                       description="Submit `gammaface run CONFIG` through Ray's Job Submission "
                       "SDK, stream its logs and exit with its outcome (0 when it succeeded). "
                       "The working directory travels with the job unless --installed.")
    p.add_argument("config", nargs="?", help="experiment config, relative to the working directory")
    p.add_argument("--address", help="Ray job server, e.g. http://HEAD:8265 (default: RAY_ADDRESS)")
    p.add_argument("--stages", help="comma-separated subset of stages")
    p.add_argument("--workdir", help="workdir on the cluster (shared storage or s3://...)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for the job (e.g. "
                   "http://mlflow:5000)")
    p.add_argument("--working-dir", default=".", help="folder uploaded with the job (default .)")
    p.add_argument("--installed", action="store_true",
                   help="use the package installed in the cluster's image; upload nothing")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--status", metavar="ID", help="print a job's status")
    p.add_argument("--stop", metavar="ID", help="ask a job to stop")
    p.set_defaults(func=cmd_submit)

    gmm = sub.add_parser("gmm", help="mixture diagnostics", description="Mixture diagnostics.")
    gsub = gmm.add_subparsers(dest="gmm_command", required=True, metavar="ACTION")
    p = gsub.add_parser("sweep", help="harvest + BIC search over several t* and projections",
                        description="Harvest latents and run the BIC search for every combination "
                        "of source, t* and projection, and print one table (chosen K, BIC gain "
                        "over K = 1, NMI per attribute). Needs the config's trained DDPM.")
    _add_config_args(p)
    p.add_argument("--workdir", help="override the config's workdir")
    p.add_argument("--t-star", default="200,320,480,800", help="timesteps (default 200,320,480,800)")
    p.add_argument("--pca", default="0", help="PCA dimensions, 0 = raw latents (e.g. 0,64)")
    p.add_argument("--source", default="forward", help="forward, reverse or both (comma-separated)")
    p.set_defaults(func=cmd_gmm_sweep)

    data = sub.add_parser("data", help="prepare a dataset as a canonical manifest",
                          description="Write manifest.parquet for a dataset in --out.")
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    p = dsub.add_parser("synthfaces", help="render the procedural SynthFaces set",
                        description="Render SynthFaces: N labelled faces (PNG) and their manifest.")
    p.add_argument("--out", required=True, help="output folder (images/ and manifest.parquet)")
    p.add_argument("--n", type=int, default=6000, help="number of faces (default 6000)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels, 16-128 (default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--spec", help="joint label distribution (YAML); default: the biased built-in")
    p.add_argument("--train", type=float, default=0.8, help="train fraction (default 0.8)")
    p.add_argument("--val", type=float, default=0.1, help="val fraction (default 0.1)")
    p.add_argument("--balanced-test", action="store_true",
                   help="draw the test split with every attribute uniform and independent")
    p.add_argument("--no-ray", action="store_true", help="render in this process, without Ray")
    p.set_defaults(func=cmd_data_synthfaces)

    p = dsub.add_parser("ffhq", help="FFHQ images + ffhq-features-dataset JSON",
                        description="Build the manifest of FFHQ from its images and the "
                        "ffhq-features-dataset JSON files.")
    p.add_argument("--images", required=True, help="folder holding images1024x1024/ or "
                   "thumbnails128x128/")
    p.add_argument("--features", required=True, help="folder holding json/NNNNN.json")
    p.add_argument("--out", required=True, help="output folder for manifest.parquet")
    p.add_argument("--variant", default="thumbnails128x128",
                   choices=["images1024x1024", "thumbnails128x128"], help="which image folder")
    p.add_argument("--no-decode-check", action="store_true",
                   help="only check that images exist, do not decode each one")
    p.set_defaults(func=cmd_data_ffhq)

    p = dsub.add_parser("fairface", help="FairFace label CSVs + images",
                        description="Build the manifest of FairFace from its label CSVs.")
    p.add_argument("--labels", required=True, help="folder holding fairface_label_train.csv and "
                   "fairface_label_val.csv")
    p.add_argument("--images", required=True, help="folder the CSV 'file' paths are relative to")
    p.add_argument("--out", required=True, help="output folder for manifest.parquet")
    p.add_argument("--no-decode-check", action="store_true",
                   help="only check that images exist, do not decode each one")
    p.set_defaults(func=cmd_data_fairface)
    return parser


_SIGNALLED: list[int] = []  # the stop signals this process received, in order


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    # a pod's or a scheduler's stop: unwind like Ctrl-C, so runs end as KILLED and locks free.
    # Remembered apart from the exception: a library that catches KeyboardInterrupt and raises
    # its own (ray.get cancels its tasks so) would otherwise report the stop as SIGINT.
    _SIGNALLED.append(signum)
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        return _interrupted(getattr(exc, "signum", None) or
                            (_SIGNALLED[-1] if _SIGNALLED else signal.SIGINT))
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:  # Ray's own SIGTERM handler, while ray.init runs
            raise
        return _interrupted(signal.SIGTERM)
    except Exception as exc:
        # the one boundary: bad input, damaged files, full or read-only disks and unreachable
        # stores end in one sentence; anything else is a bug and keeps its traceback
        message = explain(exc)
        if message is None:
            raise
        _stop_ray()
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


def _interrupted(signum: int) -> int:
    _stop_ray()
    print(f"stopped by {signal.Signals(signum).name}; rerun the same command to resume",
          file=sys.stderr)
    return 128 + signum


def _stop_ray() -> None:
    """Shut down a Ray this process started before the last word: its workers' logs would
    otherwise still be arriving after it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            ray.shutdown()
        except Exception:  # noqa: BLE001 - the sentence to print matters more
            pass


if __name__ == "__main__":
    sys.exit(main())
