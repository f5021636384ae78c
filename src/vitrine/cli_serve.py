"""The commands that serve the web app: ``demo`` (train, index and recommend on the demo
catalogue, then serve it) and ``serve`` (a store)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from vitrine.cli_support import (
    HostOpt,
    KOpt,
    ModelOpt,
    PortOpt,
    StoreOpt,
    WeightsOpt,
    api_key_note,
    command_settings,
    err,
    out,
    path_of,
)
from vitrine.config import env_value
from vitrine.errors import VitrineError


def demo(
    catalog: Annotated[Path | None, typer.Option(help="Catalogue folder (default: the "
                                                 "VITRINE_DEMO_CATALOG setting).",
                                                 parser=path_of("--catalog"))] = None,
    store: Annotated[str | None, typer.Option(help="Store folder (default: OUT/store, or "
                                              "the VITRINE_DEMO_STORE setting).",
                                              metavar="PATH")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Folder of the model, the "
                                                "figures and demo.json (default: the "
                                                "VITRINE_DEMO_OUT setting, else demo-output).",
                                                metavar="PATH")] = None,
    weights: WeightsOpt = None,
    k: KOpt = 5,
    model: ModelOpt = None,
    train_model: Annotated[bool | None, typer.Option(
        "--train/--no-train", help="Train on the catalogue (or reuse the model trained from "
        "the same photos and settings) and index with it; default: VITRINE_DEMO_TRAIN "
        "(true).")] = None,
    serve_app: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the web app on "
                                            "the demo store at the end.")] = True,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """The main job on the demo catalogue: train, index, recommend, serve.

    Trains on the demo catalogue (or reuses the model trained from the same photos and
    settings), indexes it with the trained model, shows recommendations for one product of each
    category (tables and figures), then serves the web app on it."""
    from vitrine.server import bind, exposure_note

    if train_model and model is not None:  # (before --model's own check: the two conflict)
        raise VitrineError("--train trains a model, and --model names one to use; pass one "
                           "of them.")
    for name, given in (("--store", store), ("--out", out_dir)):  # (as Path options, "" was
        if given is not None and not given.strip():  # the folder the demo ran in)
            raise VitrineError(f"{name} is empty; name a folder, or leave {name} out for its "
                               "default.")
    # the options over the settings, whose values of them are not read (a bad
    # VITRINE_DEMO_OUT refused `--out DIR`: helper-230); --train trains, whatever model
    # VITRINE_MODEL names (it indexed with that model, untrained)
    options = {"demo_train": ("--train" if train_model else "--no-train", train_model),
               "demo_catalog": ("--catalog", catalog), "demo_store": ("--store", store),
               "demo_out": ("--out", out_dir)}
    over = {field: said for field, said in options.items() if said[1] is not None}
    if train_model:
        over["model"] = ("--train", None)
    settings = command_settings(weights, model, given=over)
    if catalog is None:
        catalog = settings.demo_catalog
        if catalog is None:
            raise VitrineError("no demo catalogue given; pass --catalog DIR or set "
                               "VITRINE_DEMO_CATALOG.")
        if not catalog.is_dir():  # (said as the setting's: the user did not type it here)
            raise VitrineError(f"setting VITRINE_DEMO_CATALOG={str(catalog)!r}: no folder "
                               "there; set it to the demo catalogue's folder, or pass "
                               "--catalog DIR.")
    setting = env_value("VITRINE_DEMO_STORE", str(settings.demo_store))
    for said, given in ((f"--store {store}", store),
                        (f"setting VITRINE_DEMO_STORE={setting!r}", settings.demo_store)):
        if given is not None and re.match(r"milvus(-lite)?:/", str(given)):
            # (a Milvus address: Path made it a folder named "milvus-lite:")
            raise VitrineError(f"{said}: the demo keeps its store in a folder; to use a "
                               "Milvus store, index it with `vitrine index CATALOG --store "
                               "ADDRESS` and serve it with `vitrine serve`.")
    sock = bind(host, port) if serve_app else None  # a busy port fails before indexing
    for note in (exposure_note(host, settings.api_key, sock.getsockname()[0]),
                 api_key_note(settings)) if sock else ():
        if note:
            err.print(note, markup=False, soft_wrap=True)
    from vitrine.demo import run_demo

    # (`--out=~/x`: a shell leaves ~ as it is after '=')
    out_path = (Path(out_dir) if out_dir else settings.demo_out).expanduser()
    if out_dir is None and out_path.exists() and not out_path.is_dir():  # (said as the
        # setting's: run_demo said "--out FILE", an option the user did not pass)
        said = env_value("VITRINE_DEMO_OUT", None)
        raise VitrineError((f"setting VITRINE_DEMO_OUT={said!r}" if said is not None else
                            f"the demo's default folder {str(out_path)!r}")
                           + " is a file; set VITRINE_DEMO_OUT to a folder for the demo's "
                           "figures and model, or pass --out DIR.")
    # inside --out, where the demo knows its own store, unless set apart
    store_path = (Path(store) if store else settings.demo_store or out_path / "store"
                  ).expanduser()
    run_demo(catalog.expanduser(), store_path, out_path, settings, k, console=out, serve=sock)


def serve(
    store: StoreOpt,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    root_path: Annotated[str | None, typer.Option(
        "--root-path", help="The path prefix a reverse proxy serves Vitrine under, such as "
        "/vitrine, stripping it before passing requests on: the pages' links start with it; "
        "default: VITRINE_ROOT_PATH (none).", metavar="<path>")] = None,
) -> None:
    """Serve the web page and the REST API (OpenAPI at /docs) over a store.

    With the model that indexed it: --weights, or --model for a trained one."""
    from vitrine.server import bind, exposure_note, ready_message
    from vitrine.server import serve as run_server

    settings = command_settings(weights, model, given=None if root_path is None else {
        "root_path": ("--root-path", root_path)})  # (checked as the setting is, named so)
    sock = bind(host, port)  # a busy port fails before the model loads
    for note in (exposure_note(host, settings.api_key, sock.getsockname()[0]),
                 api_key_note(settings)):
        if note:
            err.print(note, markup=False, soft_wrap=True)
    from vitrine.api import create_app

    app_ = create_app(settings, store)
    run_server(app_, sock, on_ready=lambda address: out.print(
        ready_message(address, settings.root_path), soft_wrap=True))
