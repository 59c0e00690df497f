"""The `factory` command: run, validate, filter, compare, report, push, salvage, loopback.

Exit codes: 0 complete; 1 runtime failure, or nothing kept; 2 bad input (config,
template, seed file, an output folder in use); 3 incomplete (the teacher became
unreachable: rerun to finish); 130 / 143 stopped by SIGINT / SIGTERM after draining.
A user's mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory.config.compare import CompareConfig as CompareDefaults
from factory.core.errors import FactoryError, UserError


def _parser() -> argparse.ArgumentParser:
    from factory import __version__

    parser = argparse.ArgumentParser(prog="factory", description="Turn prompt templates and a teacher LLM into clean fine-tuning datasets.")
    parser.add_argument("--version", action="version", version=f"factory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="generate, filter and save a dataset")
    run.add_argument("pipeline", metavar="PIPELINE.yaml")
    run.add_argument("--out", metavar="DIR", help="output folder (default: outputs/<pipeline name>/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a pipeline key, e.g. --set generate.count=50 (value parsed as YAML)")
    run.add_argument("--dry-run", action="store_true",
                     help="use the built-in loopback teacher: see the whole flow and output for free")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    _grace_option(run)
    _format_option(run)

    validate = sub.add_parser("validate", help="check config, templates and seeds; render examples; send nothing")
    validate.add_argument("pipeline", metavar="PIPELINE.yaml")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    filt = sub.add_parser("filter", help="run only the pipeline's filters on an existing dataset")
    filt.add_argument("pipeline", metavar="PIPELINE.yaml")
    filt.add_argument("--input", required=True, metavar="PATH",
                      help="JSONL, JSON, Parquet or a save_to_disk folder; rows with messages, "
                           "instruction/output, prompt/completion or text")
    filt.add_argument("--out", metavar="DIR", help="output folder (default: outputs/<pipeline name>-filtered/)")
    filt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    filt.add_argument("--quiet", action="store_true", help="no progress display")
    _grace_option(filt)
    _format_option(filt)

    comp = sub.add_parser("compare", help="measure how far a synthetic dataset is from real data of the same kind")
    comp.add_argument("synthetic", type=Path, metavar="SYNTHETIC",
                      help="the dataset to measure: anything `factory filter --input` reads")
    comp.add_argument("--reference", required=True, type=Path, metavar="REAL", help="real data of the same kind")
    comp.add_argument("--out", required=True, type=Path, metavar="DIR", help="where compare.json and compare.html go")
    defaults = CompareDefaults()
    comp.add_argument("--model", help=f"sentence-embedding model, a Hub id or a folder (default {defaults.model})")
    comp.add_argument("--roles", help="comma-separated roles whose text is compared (default: all but system)")
    comp.add_argument("--max-samples", type=int, metavar="N",
                      help=f"records drawn from each side, both cut to the same size (default {defaults.max_samples})")
    comp.add_argument("--neighbours", type=int, metavar="K", help=f"k of the k-NN measures (default {defaults.neighbours})")
    comp.add_argument("--topics", type=int, metavar="N", help="topic clusters (default: from the sample size, at most 20)")
    comp.add_argument("--seed", type=int, help=f"seed of the sampling and the clustering (default {defaults.seed})")
    comp.add_argument("--device", help="device of the embedding model (default: the best available)")

    push = sub.add_parser("push", help="push a finished run to the Hugging Face Hub (token: HF_TOKEN or hf auth login)")
    push.add_argument("output_dir", type=Path)
    push.add_argument("--repo-id", help="owner/name (default: the pipeline's output.hub.repo_id)")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None, help="(the default)")
    visibility.add_argument("--public", dest="private", action="store_false")
    push.add_argument("--test-size", type=float, help="hold out this share as a test split (seeded)")
    push.add_argument("--include-rejected", action="store_true", default=None, help="push rejected.jsonl too")
    push.add_argument("--commit-message")
    init = sub.add_parser("init", help="start a pipeline of your own from a shipped one (templates and seeds included)")
    init.add_argument("task", metavar="TASK", help="a shipped pipeline: " + ", ".join(_shipped_tasks()))
    init.add_argument("dir", metavar="DIR", nargs="?", type=Path, help="folder to create (default: ./TASK)")
    salvage = sub.add_parser("salvage", help="copy everything still readable of a damaged run store into a fresh one")
    salvage.add_argument("output_dir", type=Path)
    report = sub.add_parser("report", help="rebuild OUTPUT_DIR/report.html from a finished run's files")
    report.add_argument("output_dir", type=Path)
    loop = sub.add_parser("loopback", help="serve the OpenAI-compatible loopback teacher (tests, benchmarks)")
    loop.add_argument("--host", default="127.0.0.1")
    loop.add_argument("--port", type=int, default=0, help="0 picks a free port; the URL is printed")
    loop.add_argument("--slots", type=int, default=64, help="decode slots: requests served at once")
    loop.add_argument("--latency-median", type=float, default=0.0, help="median service time, seconds")
    loop.add_argument("--latency-sigma", type=float, default=0.0, help="lognormal sigma of the service time")
    loop.add_argument("--fault-rate", type=float, default=0.0, help="share of requests failing, spread over all kinds")
    loop.add_argument("--fault", action="append", default=[], metavar="KIND=P", help="one kind's probability")
    loop.add_argument("--retry-after", type=float, default=0.05)
    loop.add_argument("--hang-s", type=float, default=3600.0)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--refuse-response-format", action="store_true")
    loop.add_argument("--exit-after", type=int, default=None, metavar="N",
                      help="crash (exit 75) on the request after N answered ones")
    loop.add_argument("--imitate", choices=["openai", "llama_cpp"], default="openai",
                      help="answer as this server does (llama_cpp: llama-cpp-python's structured output)")
    loop.add_argument("--reasoning-api", action="store_true",
                      help="refuse max_tokens and non-default temperature/top_p, as OpenAI's reasoning models do")
    loop.add_argument("--thinking", choices=["reasoning", "reasoning_content", "tags", "open_tag_in_prompt"],
                      help="return a reasoning model's thinking this way")
    loop.add_argument("--cache-prefix", action="store_true", help="bill a system prompt seen before as cached tokens")
    loop.add_argument("--no-metrics", dest="metrics", action="store_false",
                      help="serve no /metrics page (a server that is not vLLM)")
    loop.add_argument("--batch-delay", type=float, default=0.0, help="seconds from a batch's creation to its end")
    loop.add_argument("--batch-expire", action="append", default=[], metavar="N=SHARE",
                      help="the N-th batch created expires with SHARE of its rows done")
    loop.add_argument("--batch-lose", action="append", type=int, default=[], metavar="N",
                      help="the N-th batch created answers 404 (lost)")
    loop.add_argument("--batch-error", metavar="REGEX", help="batch rows whose last user message matches are refused")
    return parser


def _shipped_tasks() -> list[str]:
    from factory.core.resources import shipped_pipelines

    return list(shipped_pipelines())


def _grace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                        help="after Ctrl-C or SIGTERM, how long requests in flight may take to land (default 30)")


def _format_option(parser: argparse.ArgumentParser) -> None:
    from factory.config.formats import FORMATS

    parser.add_argument("--format", dest="formats", action="append", default=[], metavar="FORMAT",
                        choices=list(FORMATS),
                        help=f"also write this format beside dataset/ (repeatable): {', '.join(FORMATS)}; "
                             "adds to output.formats")


def _load(args):
    from factory.config.pipeline import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.overrides)
    if getattr(args, "formats", None):
        output = pipeline.config.output
        output.formats = list(dict.fromkeys([*output.formats, *args.formats]))
    return pipeline


def main(argv: list[str] | None = None) -> int:
    from factory.core.quiet_libraries import library_progress_off
    from factory.core.stopping import StopNow, Stopped

    args = _parser().parse_args(argv)
    try:
        with library_progress_off():
            return {"run": _run, "validate": _validate, "filter": _filter, "compare": _compare, "report": _report,
                    "push": _push, "salvage": _salvage, "loopback": _loopback, "init": _init}[args.command](args)
    except Stopped as err:
        print(f"factory: {err}", file=sys.stderr)
        return err.exit_code
    except UserError as err:
        print(f"factory: error: {err}", file=sys.stderr)
        return 2
    except FactoryError as err:
        print(f"factory: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        from factory.store.run_store import is_disk_full

        if not is_disk_full(err):
            raise
        print(f"factory: error: {err.filename or 'a file'}: the disk is full ({err.strerror}); free some space "
              f"and rerun the same command: everything stored so far is kept", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, StopNow):
        # Outside a run (validate, push, report): nothing to drain.
        print("factory: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from factory.api import Pipeline

    pipe = Pipeline.from_yaml(args.pipeline, args.overrides, dry_run=args.dry_run, formats=args.formats)
    hub = pipe.file.config.output.hub
    if hub is not None and not args.dry_run:
        from factory.outputs.push import find_token

        find_token()  # no token: say so now, before anything is spent
    result = pipe.execute(args.out, show_progress=not args.quiet, grace=args.grace)
    _summary(result)
    if not result.kept:
        return _nothing_kept(result)
    if hub is not None and not args.dry_run:
        _push_to(result.out_dir, hub)
    else:
        _push_hint(result.out_dir, hub, args.dry_run)
    return 0


def _nothing_kept(result) -> int:
    reasons: dict[str, int] = {}
    for stage in result.funnel["stages"]:
        for reason, count in stage["dropped"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    top = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]) or "none"
    print(f"factory: error: kept 0 of {result.requested} samples (top rejection reasons: {top}); "
          f"see {result.out_dir}/rejected.jsonl", file=sys.stderr)
    return 1


def _push(args) -> int:
    from factory.outputs.push import hub_settings

    changes = {name: getattr(args, name) for name in ("repo_id", "private", "test_size", "include_rejected",
                                                      "commit_message") if getattr(args, name) is not None}
    _push_to(args.output_dir, hub_settings(args.output_dir, changes))
    return 0


def _push_to(out_dir, hub) -> None:
    from factory.outputs.push import push_run

    print(f"pushed: {push_run(out_dir, hub)}")


def _filter(args) -> int:
    from factory.run.filter_command import filter_dataset

    pipeline = _load(args)
    out = Path(args.out) if args.out else pipeline.output_dir()
    if not args.out:
        out = out.with_name(out.name + "-filtered")  # never over a generated dataset
    options = {"show_progress": not args.quiet, **({"grace": args.grace} if args.grace is not None else {})}
    result = filter_dataset(pipeline, Path(args.input), out, **options)
    _summary(result, what="input rows", generated=False)
    if not result.kept:
        return _nothing_kept(result)
    _push_hint(result.out_dir, pipeline.config.output.hub, False)
    return 0


def _init(args) -> int:
    from factory.run.scaffold import init_pipeline

    path = init_pipeline(args.task, args.dir)
    folder = path.parent
    # A folder the user named relative to here but which lies elsewhere ("../../x") is
    # written as asked, and named in full so that where it went is no surprise.
    where, full = f"{folder}/", folder.resolve()
    if not full.is_relative_to(Path.cwd().resolve()):
        where = f"{full}/ (outside the current folder)"
    print(f"wrote {where}: {path.name}, prompts/, README.md and the seed files it reads")
    print(f"next: cd {folder} && factory run {path.name} --dry-run   (free, loopback teacher), "
          f"then factory run {path.name}")
    return 0


def _compare(args) -> int:
    from pydantic import ValidationError

    from factory.compare.measure import HTML_FILE, JSON_FILE, compare_files
    from factory.config.pipeline import describe_validation_error

    given = {"model": args.model, "roles": args.roles and [r.strip() for r in args.roles.split(",") if r.strip()],
             "max_samples": args.max_samples, "neighbours": args.neighbours, "topics": args.topics,
             "seed": args.seed, "device": args.device}
    try:
        settings = CompareDefaults(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        raise UserError(f"compare: --{describe_validation_error(err).replace('_', '-')}") from None
    result, embedded = compare_files(args.synthetic, args.reference, settings, args.out)
    n = result["synthetic"]["sampled"]
    print(f"compared {n:,} records a side ({embedded:,} embedded now, the rest from the cache)")
    print("  " + "  ".join(f"{k} {result[k]:.3f}" for k in ("mauve", "precision", "recall", "density", "coverage")))
    over = [t["label"] for t in result["topics"] if t["status"] == "over"]
    under = [t["label"] for t in result["topics"] if t["status"] == "under"]
    print(f"  over-represented topics: {'; '.join(over) or 'none'}")
    print(f"  under-represented topics: {'; '.join(under) or 'none'}")
    print(f"output: {args.out}/ ({JSON_FILE}, {HTML_FILE})")
    return 0


def _salvage(args) -> int:
    from factory.store.salvage import salvage

    print(salvage(args.output_dir))
    return 0


def _summary(result, what: str = "requested samples", generated: bool = True) -> None:
    from factory.core.cost import token_summary

    s = result.stats
    print(f"kept {result.kept} of {result.requested} {what} ({result.rejected} rejected)")
    for stage in result.funnel["stages"]:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stage["dropped"].items())) or "none dropped"
        print(f"  {stage['stage']:<14} {stage['seen']:>7} in  {stage['kept']:>7} kept  ({dropped})")
    if generated:
        u = result.usage
        print(f"requests: {s.sent} sent now, {s.replayed} replayed from the run store "
              f"({u.get('requests', s.sent)} paid in all); tokens: {token_summary(u)}")
    for stage in result.funnel["stages"]:
        if "usage" in stage:
            u = stage["usage"]
            print(f"  {stage['stage']}: {u['requests']} sent, {u['replayed_from_journal']} replayed; "
                  f"tokens: {token_summary(u)}")
    print(f"output: {result.out_dir}/")
    for name, what in _OUTPUTS.items():
        if (result.out_dir / name).exists():
            print(f"  {name + ('/' if (result.out_dir / name).is_dir() else ''):<20} {what}")


_OUTPUTS = {
    "dataset": "the kept records: datasets.load_from_disk, or load_dataset on the folder",
    "data.jsonl": "the kept records as JSON lines",
    "data.parquet": "the kept records as Parquet",
    "data.sharegpt.jsonl": "ShareGPT format",
    "data.alpaca.jsonl": "Alpaca format",
    "data.openai.jsonl": "OpenAI fine-tuning format",
    "rejected.jsonl": "every dropped record, with its stage and reason",
    "README.md": "the dataset card",
    "report.html": "the report: funnel, scores, tokens, examples",
    "pipeline": "the pipeline file and templates this run used",
    "compare.json": "the comparison with real data (output.reference)",
    "run.json": "status, resolved config, usage, timings",
}


def _push_hint(out_dir: Path, hub, dry_run: bool) -> None:
    """The command that pushes this folder to the Hub (a dry run is not worth pushing)."""
    if dry_run:
        print("a dry run (loopback answers): run without --dry-run to make a dataset to push")
        return
    repo = f"--repo-id {hub.repo_id}" if hub is not None else "--repo-id OWNER/NAME"
    print(f"push it to the Hub: factory push {out_dir} {repo}")


def _report(args) -> int:
    from factory.outputs.report import build_report

    print(f"report: {build_report(args.output_dir)}")
    return 0


def _validate(args) -> int:
    from factory.config.pipeline import load_pipeline
    from factory.run.prepare import prepare

    pipeline = load_pipeline(args.pipeline, args.overrides)
    prepared = prepare(pipeline)
    cfg = pipeline.config
    task = prepared.task
    space = task.seeds.describe()
    print(f"{pipeline.path}: ok")
    print(f"  task {cfg.generate.task}: {task.summary()}")
    print(f"  teacher: {cfg.teacher.backend} {cfg.teacher.model}" + (f" at {cfg.teacher.base_url}" if cfg.teacher.base_url else ""))
    print(f"  seeds: {space['combinations']} combinations ({space['combine']}) of "
          + (", ".join(f"{k}[{v}]" for k, v in space["variables"].items()) or "no variables"))
    print("  templates: " + ", ".join(f"{t.name} ({t.short_hash})" for t in task.templates.values()))
    print("  filters: " + (", ".join(s.name for s in prepared.stages) or "none"))
    for i, example in enumerate(prepared.examples[:2]):
        print(f"\n--- example prompt {i + 1} (seed: {example['seed']})")
        for m in example["messages"]:
            print(f"[{m['role']}]\n{m['content']}")
    return 0


def _loopback(args) -> int:
    from factory.loopback import FAULT_KINDS, LoopbackOptions
    from factory.loopback.server import serve_forever

    faults = {k: args.fault_rate / len(FAULT_KINDS) for k in FAULT_KINDS} if args.fault_rate else {}
    for item in args.fault:
        kind, _, p = item.partition("=")
        try:
            faults[kind] = float(p)
        except ValueError:
            raise UserError(f"--fault {item!r}: expected KIND=PROBABILITY, like rate_limit=0.1") from None
    try:
        expire = {int(n): float(share) for n, _, share in (item.partition("=") for item in args.batch_expire)}
        batches = {"delay": args.batch_delay, "expire": expire, "lose": args.batch_lose, "error": args.batch_error}
        options = LoopbackOptions(
            slots=args.slots, latency_median=args.latency_median, latency_sigma=args.latency_sigma,
            faults=faults, retry_after=args.retry_after, hang_s=args.hang_s, seed=args.seed,
            refuse_response_format=args.refuse_response_format, metrics=args.metrics, exit_after=args.exit_after,
            batches=batches,
            imitate=args.imitate,
            reasoning_api=args.reasoning_api, thinking=args.thinking, cache_prefix=args.cache_prefix,
        )
    except ValueError as err:
        raise UserError(f"loopback: {err}") from err
    serve_forever(options, args.host, args.port)
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
