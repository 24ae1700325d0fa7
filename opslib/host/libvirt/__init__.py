"""libvirt: connections, networks, domains and their XML, changes as steps."""
