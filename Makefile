# The two commands in README.md.
.PHONY: test demo
test:
	./scripts/test.sh
demo:
	./scripts/demo.sh
