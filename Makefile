# The two commands in README.md.
.PHONY: test demo bench
test:
	./scripts/test.sh
demo:
	./scripts/demo.sh

# Not one of the two: the side-by-side benchmarks (README, Performance). Builds Garage once.
bench:
	./scripts/setup-bench-env.sh
	. .tools/bench-env && cargo bench --bench backup && cargo bench --bench restore && cargo bench --bench workers
