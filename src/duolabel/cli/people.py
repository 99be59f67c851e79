"""The sub-commands that manage people and the project file: ``annotators``, ``golden``, ``config``."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from duolabel.cli.common import ProjectOpt, _open, err, out
from duolabel.errors import ProjectError

annotators_app = typer.Typer(help="Manage the people who label.", no_args_is_help=True)
golden_app = typer.Typer(
    help="Choose the golden items: the expert labels the model learns from.", no_args_is_help=True
)
config_app = typer.Typer(help="Change the project file (duolabel.yaml), validated.", no_args_is_help=True)


@golden_app.command("suggest")
def golden_suggest(
    n: Annotated[int, typer.Argument(help="How many items to suggest.")],
    project: ProjectOpt = Path("."),
    export: Annotated[
        Path | None,
        typer.Option(
            help="Write them to this .csv or .jsonl for outside experts instead of the expert queue."
        ),
    ] = None,
) -> None:
    """Put the N items the model would learn most from in the experts' queue (learning.strategy)."""
    with _open(project) as proj:
        result = proj.suggest_golden(n, export=export)
    if result.file is not None:
        from duolabel.stages.learn import GOLD_COLUMN

        out.print(
            f"Wrote {len(result.items):,} items ({result.strategy}) to {result.file}. Fill in the column "
            f"'{GOLD_COLUMN}', then: duolabel import {result.file} --role golden --gold {GOLD_COLUMN} "
            f"-p {project}"
        )
    else:
        out.print(
            f"Queued {result.queued:,} items ({result.strategy}) for experts; they answer them on the "
            "expert page of 'duolabel serve'."
        )


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    pairs: Annotated[
        list[str],
        typer.Argument(
            help="KEY VALUE, repeated for several settings changed together: a dotted key "
            "(routing.target_accuracy, labeler.backend; labeler.1.model with several labelers, "
            "labeler.1 for a whole entry) and a YAML value (0.95, llama, [a, b], null, "
            "'{backend: llama}').",
            metavar="KEY VALUE...",
        ),
    ],
    project: ProjectOpt = Path("."),
) -> None:
    """Set settings of duolabel.yaml and rewrite it; an invalid value changes nothing.

    Switching labeler.backend drops the old backend's keys: 'duolabel config set
    labeler.backend openai labeler.model gpt-4o-mini' switches and sets the new model at once."""
    from duolabel.config.edit import set_values

    if len(pairs) % 2:
        raise ProjectError(
            f"config set: expected KEY VALUE pairs, got {len(pairs)} words ({' '.join(pairs)})"
        )
    changes = list(zip(pairs[::2], pairs[1::2], strict=True))
    edit = set_values(project, changes)
    for key, value in changes:
        out.print(escape(f"{key} = {value}"), highlight=False)
    out.print(escape(f"Wrote {project / 'duolabel.yaml'}."), highlight=False)
    if edit.backup is not None:
        err.print(
            escape(
                f"The file is written with duolabel's own comments; yours are not in it. The file "
                f"as it was is kept as {edit.backup}."
            ),
            highlight=False,
            soft_wrap=True,
        )


@annotators_app.command("add")
def annotators_add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    project: ProjectOpt = Path("."),
    role: Annotated[str, typer.Option(help="annotator, expert or admin.")] = "annotator",
    password_env: Annotated[
        str | None, typer.Option(help="Read the password from this environment variable.")
    ] = None,
) -> None:
    """Create an account (the password is asked for, or read from --password-env)."""
    from duolabel.people.accounts import add_annotator

    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise ProjectError(f"--password-env {password_env}: that environment variable is not set")
        if not password:
            raise ProjectError(f"--password-env {password_env}: that environment variable is empty")
    else:
        password = getpass.getpass(f"Password for {name}: ")
    with _open(project) as proj:
        created = add_annotator(proj.store, name, password, role=role)
    # Names are the user's text: printed as they are, never read as Rich markup.
    out.print(escape(f"Created {role} '{created.name}'."), highlight=False)


@annotators_app.command("invite")
def annotators_invite(
    project: ProjectOpt = Path("."),
    role: Annotated[str, typer.Option(help="annotator, expert or admin.")] = "annotator",
    base_url: Annotated[
        str, typer.Option(help="The address people open the app at.")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Print a one-time invitation link (annotators take the exam after signing up)."""
    from duolabel.people.accounts import create_invitation

    with _open(project) as proj:
        token = create_invitation(proj.store, role=role, hours=proj.config.web.invitation_hours)
        hours = proj.config.web.invitation_hours
    out.print(f"{base_url.rstrip('/')}/invite/{token}", soft_wrap=True, highlight=False)
    err.print(f"One-time link for a new {role}, valid for {hours:g} hours.")


@annotators_app.command("list")
def annotators_list(project: ProjectOpt = Path(".")) -> None:
    """Accounts with their status, answers, control accuracy and flags."""
    from duolabel.people.qc import annotator_table

    with _open(project) as proj:
        frame = annotator_table(proj.store, proj.config.quality)
    table = Table(title="Accounts")
    for column in ("name", "role", "status", "answers", "controls", "control accuracy", "flags"):
        table.add_column(column)
    for row in frame.itertuples():
        accuracy = (
            ""
            if row.control_accuracy is None or row.control_accuracy != row.control_accuracy
            else (f"{row.control_accuracy:.0%} [{row.accuracy_low:.0%}, {row.accuracy_high:.0%}]")
        )
        cells = (row.name, row.role, row.status, str(row.answers), str(row.controls), accuracy, row.flags)
        table.add_row(*map(escape, cells))
    out.print(table)


@annotators_app.command("set-status")
def annotators_set_status(
    name: Annotated[str, typer.Argument(help="Login name.")],
    status: Annotated[str, typer.Argument(help="active, suspended, onboarding or declined.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Suspend or reactivate an account (a suspended person's answers are kept but not used)."""
    from duolabel.people.accounts import set_status

    with _open(project) as proj:
        changed = set_status(proj.store, name, status)
    out.print(escape(f"'{changed.name}' is now {status}."), highlight=False)
