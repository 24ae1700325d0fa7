"""Local accounts and groups, and an account's libvirt login settings."""
