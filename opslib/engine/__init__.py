"""The runbook engine: what a notebook calls, headless runs with papermill, the forms, metrics."""
