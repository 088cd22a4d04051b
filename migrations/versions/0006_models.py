"""models by name: versions per tenant and name, aliases, the registry's generation

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('model_versions',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('tenant', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id'),
    sa.UniqueConstraint('tenant', 'name', 'version',
                        name='uq_model_versions_tenant_name_version')
    )
    op.create_table('model_aliases',
    sa.Column('tenant', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('alias', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('mlflow_pending', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant', 'name', 'alias')
    )
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_aliases_mlflow_pending'), ['mlflow_pending'],
                              unique=False)
    state = op.create_table('model_registry_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(state, [{'id': 1, 'generation': 0}])
    # Succeeded jobs from before this migration become versions, in order of finishing.
    op.execute("""
        INSERT INTO model_versions (job_id, tenant, name, version, created_at)
        SELECT id, tenant, name,
               ROW_NUMBER() OVER (PARTITION BY tenant, name ORDER BY finished_at, id),
               COALESCE(finished_at, created_at)
        FROM jobs WHERE status = 'succeeded'
    """)


def downgrade() -> None:
    op.drop_table('model_registry_state')
    with op.batch_alter_table('model_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_aliases_mlflow_pending'))
    op.drop_table('model_aliases')
    op.drop_table('model_versions')
