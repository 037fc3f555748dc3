# The two commands a new user needs; both set everything up on first use.
.PHONY: quickstart test setup cluster-bins lint crds

setup:
	@hack/setup.sh

quickstart: setup
	.venv/bin/recplane quickstart

cluster-bins:
	@hack/build-cluster-bins.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: setup cluster-bins lint
	.venv/bin/pytest

crds: setup
	.venv/bin/recplane crds generate
	.venv/bin/recplane crds docs
	.venv/bin/python hack/sync-chart.py
