"""PostgreSQL tells the engines of every replica when a run is queued and when one ends.

An engine looks for queued runs when its own process queued one, when one of
its runs ended, and every `queue_poll_seconds`.  A run queued by another
replica or by the CLI, or a concurrency group freed by a run that ended on
another replica, waited for that look.  These triggers NOTIFY `shipline_runs`
instead (`store.listening` LISTENs for the server's engine).  SQLite serves one
host, whose processes poke their own engine: nothing to do there.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CHANNEL = "shipline_runs"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION shipline_runs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$
        """
    )
    # One notification per statement that queues runs, and per run that ends (NOTIFY folds
    # repeats within a transaction into one).
    op.execute("CREATE TRIGGER runs_queued AFTER INSERT ON runs FOR EACH STATEMENT EXECUTE FUNCTION shipline_runs_notify()")
    op.execute(
        "CREATE TRIGGER runs_ended AFTER UPDATE OF status ON runs FOR EACH ROW "
        "WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION shipline_runs_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER runs_ended ON runs")
    op.execute("DROP TRIGGER runs_queued ON runs")
    op.execute("DROP FUNCTION shipline_runs_notify()")
