"""6in4 tunnels: the kernel's sit links, the userspace end and its systemd unit."""
