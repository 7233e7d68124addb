.PHONY: bench

# Every benchmarks/bench_*.py; the table goes to docs/performance.md (about 10 minutes on 2 cores).
bench:
	python benchmarks/run_all.py
