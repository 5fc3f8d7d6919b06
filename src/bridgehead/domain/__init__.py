"""Pure data and rules: jobs, clusters, events. No I/O."""
