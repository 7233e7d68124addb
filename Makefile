.PHONY: bench

# Every benchmarks/bench_*.py; the table goes to docs/performance.md (about 10 minutes on 2 cores,
# the Dask scale benchmark at reduced size among them).
# make bench SCALE=full: the scale benchmark alone at full size (100,000 and 1,000,000 documents),
# written to its own block of docs/performance.md.
bench:
ifeq ($(SCALE),full)
	python benchmarks/run_all.py --only scale --full --timeout 14400 --block scale
else
	python benchmarks/run_all.py
endif
