"""wirecheck harness: the SMB stack, transports, scenarios, runner and pcap library (docs/architecture.md)."""
