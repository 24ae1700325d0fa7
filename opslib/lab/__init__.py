"""The lab: a whole daemon host built from real parts in network namespaces."""
