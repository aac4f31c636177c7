"""Networks: drivers, IPAM, NAT and DNS (bridge networks come in a later step)."""
