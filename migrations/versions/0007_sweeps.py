"""sweeps: the sweeps table, jobs.sweep_id and jobs.trial, and Optuna's own tables

Optuna's tables are created here, once, so every process opens the study storage with
`skip_table_creation` and no two of them race to create tables.

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from optuna import __version__ as optuna_version
from optuna.storages._rdb import models as optuna_models


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'),
              nullable=False),
    sa.Column('objective', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'),
              nullable=False),
    sa.Column('max_trials', sa.Integer(), nullable=False),
    sa.Column('max_parallel', sa.Integer(), nullable=False),
    sa.Column('best', sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql'),
              nullable=True),
    sa.Column('mlflow_experiment_id', sa.String(length=64), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('step_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.create_index('ix_sweeps_tenant_created', ['tenant', 'created_at', 'id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_step_requested_at'), ['step_requested_at'],
                              unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sweep_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('trial', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_sweep_id'), ['sweep_id'], unique=False)
        batch_op.create_foreign_key('fk_jobs_sweep_id_sweeps', 'sweeps', ['sweep_id'], ['id'],
                                    ondelete='CASCADE')

    bind = op.get_bind()
    optuna_models.BaseModel.metadata.create_all(bind)
    bind.execute(sa.text("INSERT INTO version_info (version_info_id, schema_version, "
                         "library_version) VALUES (1, :schema, :library)"),
                 {"schema": optuna_models.SCHEMA_VERSION, "library": optuna_version})


def downgrade() -> None:
    optuna_models.BaseModel.metadata.drop_all(op.get_bind())
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_sweep_id_sweeps', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_sweep_id'))
        batch_op.drop_column('trial')
        batch_op.drop_column('sweep_id')
    op.drop_table('sweeps')
