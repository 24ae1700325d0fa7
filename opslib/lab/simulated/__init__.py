"""The simulated daemon host: namespaces, its libvirtd, NAT network and tiny guests."""
