"""`vmsift forget` (retention policies, per VM) and `vmsift prune` (free what no snapshot
uses)."""

from __future__ import annotations

import click

from ..report import human_size
from .render import document, echo_json
from .repo_cmd import open_repo, parse_duration, repo_options, retry_lock_option


def _pct(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise click.BadParameter("a percentage is 0 to 100")
    return value / 100


def _prune(repo, max_unused: str, dry_run: bool, as_json: bool) -> dict:
    from ..backup.pruner import prune

    say = None if as_json else (lambda text: click.echo(f"prune: {text}", err=True))
    r = prune(repo, _pct(max_unused), dry_run, say)
    if not as_json:
        verb = "would free" if dry_run else "freed"
        click.echo(f"prune: {verb} {human_size(r.bytes_freed)}: {r.packs_deleted} pack(s) "
                   f"deleted, {r.packs_repacked} repacked into {r.packs_written}; "
                   f"{human_size(r.unused_after)} unused left"
                   + (f"; {human_size(r.leftovers_freed)} of temporaries left by killed writers "
                      "deleted" if r.leftovers_freed else ""))
    return r.to_dict()


@click.command("forget")
@repo_options
@click.option("--keep-last", type=int, default=0, metavar="N", help="The newest N per VM.")
@click.option("--keep-hourly", type=int, default=0, metavar="N")
@click.option("--keep-daily", type=int, default=0, metavar="N")
@click.option("--keep-weekly", type=int, default=0, metavar="N")
@click.option("--keep-monthly", type=int, default=0, metavar="N")
@click.option("--keep-yearly", type=int, default=0, metavar="N")
@click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAG",
              help="Every snapshot with this tag (repeatable).")
@click.option("--vm", "vm_names", multiple=True, help="Only the snapshots of this VM.")
@click.option("--dry-run", is_flag=True, help="Say what would be forgotten; change nothing.")
@click.option("--prune", "then_prune", is_flag=True, help="Prune afterwards.")
@click.option("--max-unused", default="5", show_default=True, metavar="PCT",
              help="With --prune: unused space left in partly used packs.")
@retry_lock_option
@click.option("--json", "as_json", is_flag=True)
def forget_cmd(repo_path, password_file, keep_last, keep_hourly, keep_daily, keep_weekly,
               keep_monthly, keep_yearly, keep_tags, vm_names, dry_run, then_prune,
               max_unused, retry_lock, as_json) -> None:
    """Forget the snapshots a retention policy does not keep, VM by VM (the data goes with
    `prune`)."""
    from ..backup.retention import Policy, apply

    policy = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                    keep_yearly, tuple(keep_tags))
    with open_repo(repo_path, password_file) as repo, \
            repo.lock(exclusive=True, wait=parse_duration(retry_lock)):
        snaps = [s for s in repo.snapshots() if not vm_names or s.vm_name in vm_names]
        decision = apply(snaps, policy)
        if not dry_run:
            for s in decision.forget:
                repo.backend.delete("snapshots", s.id)
        pruned = _prune(repo, max_unused, dry_run, as_json) if then_prune else None
    if as_json:
        echo_json(document(dry_run=dry_run, keep=[
            {"id": s.id, "vm": s.vm_name, "time": s.time.isoformat(),
             "reasons": decision.reasons[s.id]} for s in decision.keep],
            forget=[{"id": s.id, "vm": s.vm_name, "time": s.time.isoformat()}
                    for s in decision.forget], prune=pruned))
        return
    for s in decision.keep:
        click.echo(f"keep    {s.short_id}  {s.vm_name}  {s.time:%Y-%m-%d %H:%M}  "
                   f"({', '.join(decision.reasons[s.id])})")
    for s in decision.forget:
        click.echo(f"{'would forget' if dry_run else 'forget'}  {s.short_id}  {s.vm_name}  "
                   f"{s.time:%Y-%m-%d %H:%M}")


@click.command("prune")
@repo_options
@click.option("--max-unused", default="5", show_default=True, metavar="PCT",
              help="Unused space allowed to stay in partly used packs (percent of the "
                   "repository); 0 repacks every partly used pack.")
@click.option("--dry-run", is_flag=True, help="Say what would be freed; change nothing.")
@retry_lock_option
@click.option("--json", "as_json", is_flag=True)
def prune_cmd(repo_path, password_file, max_unused, dry_run, retry_lock, as_json) -> None:
    """Delete packs no snapshot uses and repack partly used ones (exclusive lock; a kill at
    any moment loses nothing)."""
    with open_repo(repo_path, password_file) as repo, \
            repo.lock(exclusive=True, wait=parse_duration(retry_lock)):
        result = _prune(repo, max_unused, dry_run, as_json)
    if as_json:
        echo_json(document(**result))
