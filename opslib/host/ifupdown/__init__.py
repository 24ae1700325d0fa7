"""ifupdown: ``/etc/network/interfaces`` and the networking service, confirm or revert."""
