"""The kernel's links, addresses, neighbours and routes (pyroute2, raw rtnetlink), and ICMP."""
