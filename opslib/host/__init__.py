"""The adapters: what opslib drives on a daemon host, grouped by the component."""
