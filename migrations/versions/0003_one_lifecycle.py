"""one lifecycle: whole request stored at submit, placement in slice rows (kept as history)

Revision ID: 0003
Revises: 0002

- jobs: ``request`` becomes the whole scheduler Request (constraints included), derived once at
  submit; new ``min_runtime_s``, ``preemptible`` (read by the scheduler instead of re-parsing the
  spec) and ``reason_code`` (what the last attempt's outcome was).
- slices: released instead of deleted (``released_at``), so a finished attempt's placement and
  GPU-hours stay queryable; the capacity triggers count live slices only.
- attempts: ``placement`` moves into released slice rows and the column goes.
- accelerators: the telemetry columns unused since 0002 (accelerator_samples holds telemetry) go.
"""
from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

WHOLE = 1000


def _request(resources: dict) -> dict:
    """The stored Request of a spec's resources (same arithmetic as controlplane.core.requests)."""
    gpu = float(resources.get("gpu", 0) or 0)
    whole = int(gpu) if gpu >= 1 else 0
    milli = 0 if whole else round(gpu * WHOLE)
    memory = int(resources.get("gpu_memory_mib", 0) or 0)
    if not whole and not milli and memory:
        milli = 1
    return {"cpu_milli": int(resources.get("cpu_milli", 0) or 0),
            "memory_mib": int(resources.get("memory_mib", 0) or 0), "gpus": whole, "gpu_milli": milli,
            "gpu_memory_mib": memory if not whole else 0, "gang": int(resources.get("nodes", 1) or 1),
            "constraints": {"vendor": resources.get("vendor"), "models": list(resources.get("models") or []),
                            "min_memory_mib": int(resources.get("min_gpu_memory_mib", 0) or 0),
                            "labels": dict(resources.get("labels") or {})}}


_SQLITE_TRIGGERS = [
    """CREATE TRIGGER slices_reserve AFTER INSERT ON slices WHEN NEW.released_at IS NULL BEGIN
         UPDATE accelerators SET allocated_milli = allocated_milli + NEW.compute_milli,
                allocated_memory_mib = allocated_memory_mib + NEW.memory_mib
          WHERE uuid = NEW.accelerator_uuid;
       END""",
    """CREATE TRIGGER slices_release AFTER UPDATE OF released_at ON slices
         WHEN OLD.released_at IS NULL AND NEW.released_at IS NOT NULL BEGIN
         UPDATE accelerators SET allocated_milli = allocated_milli - OLD.compute_milli,
                allocated_memory_mib = allocated_memory_mib - OLD.memory_mib
          WHERE uuid = OLD.accelerator_uuid;
       END""",
    """CREATE TRIGGER slices_delete AFTER DELETE ON slices WHEN OLD.released_at IS NULL BEGIN
         UPDATE accelerators SET allocated_milli = allocated_milli - OLD.compute_milli,
                allocated_memory_mib = allocated_memory_mib - OLD.memory_mib
          WHERE uuid = OLD.accelerator_uuid;
       END""",
    """CREATE TRIGGER slices_release_only BEFORE UPDATE ON slices
         WHEN NOT (OLD.released_at IS NULL AND NEW.released_at IS NOT NULL
                   AND NEW.accelerator_uuid = OLD.accelerator_uuid AND NEW.member_id = OLD.member_id
                   AND NEW.compute_milli = OLD.compute_milli AND NEW.memory_mib = OLD.memory_mib) BEGIN
         SELECT RAISE(ABORT, 'a slice can only be released (released_at set once)');
       END""",
]

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION gpupool_slices_account() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.released_at IS NULL THEN
      UPDATE accelerators SET allocated_milli = allocated_milli + NEW.compute_milli,
             allocated_memory_mib = allocated_memory_mib + NEW.memory_mib
       WHERE uuid = NEW.accelerator_uuid;
    END IF;
    RETURN NEW;
  ELSIF TG_OP = 'DELETE' THEN
    IF OLD.released_at IS NULL THEN
      UPDATE accelerators SET allocated_milli = allocated_milli - OLD.compute_milli,
             allocated_memory_mib = allocated_memory_mib - OLD.memory_mib
       WHERE uuid = OLD.accelerator_uuid;
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.released_at IS NULL AND NEW.released_at IS NOT NULL
     AND NEW.accelerator_uuid = OLD.accelerator_uuid AND NEW.member_id = OLD.member_id
     AND NEW.compute_milli = OLD.compute_milli AND NEW.memory_mib = OLD.memory_mib THEN
    UPDATE accelerators SET allocated_milli = allocated_milli - OLD.compute_milli,
           allocated_memory_mib = allocated_memory_mib - OLD.memory_mib
     WHERE uuid = OLD.accelerator_uuid;
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'a slice can only be released (released_at set once)';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    ts = time.time()
    # plain ADD COLUMN (a SQLite batch rebuild of a referenced table would trip the foreign keys)
    op.add_column('jobs', sa.Column('min_runtime_s', sa.Float(), nullable=False, server_default='0'))
    op.add_column('jobs', sa.Column('preemptible', sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column('jobs', sa.Column('reason_code', sa.String(32), nullable=True))
    op.add_column('slices', sa.Column('allocated_at', sa.Float(), nullable=True))
    op.add_column('slices', sa.Column('released_at', sa.Float(), nullable=True))
    # the old triggers refuse any UPDATE of a slice: drop them while the rows move
    if pg:
        op.execute("DROP TRIGGER IF EXISTS slices_account ON slices")
    else:
        for name in ("slices_reserve", "slices_release", "slices_no_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.create_index('ix_slices_live', 'slices', ['accelerator_uuid'],
                    **({"postgresql_where": sa.text("released_at IS NULL")} if pg
                       else {"sqlite_where": sa.text("released_at IS NULL")}))

    jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('spec', sa.JSON),
                    sa.column('request', sa.JSON), sa.column('min_runtime_s', sa.Float),
                    sa.column('preemptible', sa.Boolean))
    for job_id, spec in bind.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        spec = spec or {}
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(
            request=_request(spec.get("resources") or {}),
            min_runtime_s=float(spec.get("min_runtime_s", 0) or 0),
            preemptible=bool(spec.get("preemptible", True))))

    # placement JSON -> released slice rows, for members whose slices were deleted when freed
    attempts = sa.table('attempts', sa.column('id', sa.Integer), sa.column('placement', sa.JSON),
                        sa.column('created_at', sa.Float), sa.column('finished_at', sa.Float))
    members = sa.table('attempt_members', sa.column('id', sa.Integer), sa.column('attempt_id', sa.Integer),
                       sa.column('rank', sa.Integer))
    slices = sa.table('slices', sa.column('member_id', sa.Integer), sa.column('accelerator_uuid', sa.String),
                      sa.column('compute_milli', sa.Integer), sa.column('memory_mib', sa.BigInteger),
                      sa.column('allocated_at', sa.Float), sa.column('released_at', sa.Float))
    accelerators = {u for (u,) in bind.execute(sa.text("SELECT uuid FROM accelerators"))}
    with_slices = {m for (m,) in bind.execute(sa.text("SELECT DISTINCT member_id FROM slices"))}
    bind.execute(sa.text("UPDATE slices SET allocated_at = (SELECT a.created_at FROM attempts a "
                         "JOIN attempt_members m ON m.attempt_id = a.id WHERE m.id = slices.member_id)"))
    for attempt_id, placement, created, finished in bind.execute(
            sa.select(attempts.c.id, attempts.c.placement, attempts.c.created_at, attempts.c.finished_at)):
        ranks = {r: m for m, r in bind.execute(sa.select(members.c.id, members.c.rank)
                                               .where(members.c.attempt_id == attempt_id))}
        rows = [{"member_id": ranks[m["rank"]], "accelerator_uuid": g["accelerator_uuid"],
                 "compute_milli": g["compute_milli"], "memory_mib": g["memory_mib"],
                 "allocated_at": created, "released_at": finished or ts}
                for m in placement or [] if m.get("rank") in ranks and ranks[m["rank"]] not in with_slices
                for g in m.get("slices") or [] if g.get("accelerator_uuid") in accelerators]
        if rows:
            bind.execute(slices.insert(), rows)
    if pg:
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER slices_account AFTER INSERT OR DELETE OR UPDATE ON slices "
                   "FOR EACH ROW EXECUTE FUNCTION gpupool_slices_account()")
    else:
        for stmt in _SQLITE_TRIGGERS:
            op.execute(stmt)
    # SQLite >= 3.35 drops a column in place (a batch rebuild would trip the foreign keys)
    for table, column in (("attempts", "placement"), ("accelerators", "unmanaged_memory_mib"),
                          ("accelerators", "gpu_util_pct"), ("accelerators", "telemetry")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def downgrade() -> None:
    raise NotImplementedError("0003 moves placements into slice rows; restore a backup to go back")
