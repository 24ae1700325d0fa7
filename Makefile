# Shorthands for the scripts the README names.
.PHONY: setup demo test bench
setup:
	./scripts/setup.sh
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
bench:
	.venv/bin/python benchmarks/find_vm_ip_bench.py
	.venv/bin/python benchmarks/records_bench.py
