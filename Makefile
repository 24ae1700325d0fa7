# Shorthands for the scripts the README names.
.PHONY: setup demo test bench bench-fleet
setup:
	./scripts/setup.sh
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
# records_bench needs no lab; the other three a configured simulated host
# (opsbook lab up --simulated --configured; each says so in one line when it is missing).
# PREFIX=NAME picks the lab (default $$OPSBOOK_LAB_PREFIX, else ob).
bench:
	.venv/bin/python benchmarks/records_bench.py
	.venv/bin/python benchmarks/find_vm_ip_bench.py $(if $(PREFIX),--prefix $(PREFIX))
	.venv/bin/python benchmarks/host_health_bench.py $(if $(PREFIX),--prefix $(PREFIX))
	.venv/bin/python benchmarks/run_bench.py $(if $(PREFIX),--prefix $(PREFIX))
# three booted hosts: opsbook lab up --hosts 3
bench-fleet:
	.venv/bin/python benchmarks/fleet_bench.py $(if $(PREFIX),--prefix $(PREFIX))
