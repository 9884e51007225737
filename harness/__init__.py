"""wirecheck harness: the SMB stack, transports, scenarios, runner and pcap library (see DESIGN.md)."""
