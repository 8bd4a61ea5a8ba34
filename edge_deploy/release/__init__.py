"""Controller side of releases: bundles, the TUF repository that signs them, the agent's zip."""
