"""One module per runbook: the plan()/apply()/run()/checks() its notebook calls."""
