"""The contract every runbook obeys: declared inputs, plan then apply as a transaction, saved plans
and the apply policy."""
