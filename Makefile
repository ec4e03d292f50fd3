.PHONY: run test lint bench bench-fleet

run:  ## set up and run web, worker and beat on embedded defaults
	bash scripts/run.sh

test:  ## set up services and the virtualenv, then run the whole test suite
	bash scripts/test.sh $(ARGS)

lint:
	.venv/bin/ruff check .

bench:
	bash scripts/bootstrap.sh test && .venv/bin/python benchmarks/bench_docker.py

# N instances built through the project (default 1000; e.g. make bench-fleet ARGS="--n 200").
bench-fleet:
	bash scripts/bootstrap.sh test && .venv/bin/python benchmarks/bench_fleet.py $(ARGS)
