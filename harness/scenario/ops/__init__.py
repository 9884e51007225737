"""Operations that need only the foundation (wrappers/): processes on emulated hosts, impairments,
waiting, and TCP/UDP exchanges with data integrity. Capabilities add theirs in their own modules."""
