#!/bin/sh
# Runs before the app starts: wait for nothing, migrate.
set -e
alembic upgrade head
