"""The core every layer stands on: errors, changes, parameters and their types, files, processes."""
