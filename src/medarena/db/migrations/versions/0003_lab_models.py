"""lab: model registry

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lab_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('dataset_name', sa.String(length=200), nullable=False),
    sa.Column('dataset_split', sa.String(length=200), nullable=False),
    sa.Column('dataset_version', sa.String(length=64), nullable=False),
    sa.Column('recipe_yaml', sa.Text(), nullable=False),
    sa.Column('recipe_digest', sa.String(length=64), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('curves', sa.JSON(), nullable=False),
    sa.Column('model_card', sa.JSON(), nullable=False),
    sa.Column('weights_digest', sa.String(length=64), nullable=False),
    sa.Column('onnx_digest', sa.String(length=64), nullable=True),
    sa.Column('onnx_size', sa.BigInteger(), nullable=True),
    sa.Column('export', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version')
    )
    with op.batch_alter_table('lab_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lab_models_name'), ['name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('lab_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lab_models_name'))
    op.drop_table('lab_models')
